"""The package list, which setup.cfg cannot state: the `tfvaeclf` tree, plus
the repository's top-level `export/` installed as `tfvaeclf.export` (its
`package_dir` is in setup.cfg), so that no bare `export` is installed."""

import setuptools

setuptools.setup(packages=setuptools.find_packages(
    include=["tfvaeclf", "tfvaeclf.*"]) + ["tfvaeclf.export"])
