"""Every relative link and image of README.md and docs/*.md points at a file
of the checkout, and at a heading of that page where it names one (GitHub's
anchors). Reads text only: no TensorFlow."""

import os
import re
import sys

import pytest

from tests.conftest import REPO

# [text](target) and ![alt](target); the target ends at a space (a title).
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s[^)]*)?\)")
_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")


def _pages():
  docs = os.path.join(REPO, "docs")
  return ["README.md"] + sorted(f"docs/{name}" for name in os.listdir(docs)
                                if name.endswith(".md"))


def _prose(text):
  """The lines of `text` outside fenced code blocks, code spans blanked."""
  lines, fenced = [], False
  for line in text.splitlines():
    if _FENCE.match(line.strip()):
      fenced = not fenced
      continue
    if not fenced:
      lines.append(_CODE_SPAN.sub("", line))
  return lines


def slug(heading):
  """GitHub's anchor of a heading's text: lower case, punctuation dropped
  (letters, digits, `_` and `-` stay), each space a hyphen."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: text
  return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text):
  """The anchors of a Markdown page's headings; repeats get -1, -2, ..."""
  found, seen = set(), {}
  for line in _prose(text):
    match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
    if not match:
      continue
    base = slug(match.group(1))
    count = seen.get(base, 0)
    seen[base] = count + 1
    found.add(base if count == 0 else f"{base}-{count}")
  return found


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def links(page):
  """[(line number, target)] of the relative links and images of `page`."""
  found = []
  for number, line in enumerate(_prose(_read(os.path.join(REPO, page))),
                                start=1):
    for target in _LINK.findall(line):
      if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
        found.append((number, target))
  return found


def broken(page):
  """The links of `page` whose file or heading does not exist, as text."""
  problems = []
  for number, target in links(page):
    path, _, fragment = target.partition("#")
    resolved = (os.path.normpath(os.path.join(REPO, os.path.dirname(page),
                                              path)) if path
                else os.path.join(REPO, page))
    if not resolved.startswith(REPO + os.sep):
      problems.append(f"{page}: {target} leaves the checkout")
    elif not os.path.exists(resolved):
      problems.append(f"{page}: {target}: no such file")
    elif fragment and (not resolved.endswith(".md")
                       or fragment not in anchors(_read(resolved))):
      problems.append(f"{page}: {target}: no such heading")
  return problems


def test_github_anchors():
  assert slug("Scaling out: `--strategy`") == "scaling-out---strategy"
  assert slug("At the frontier, read by fair classifiers") == (
      "at-the-frontier-read-by-fair-classifiers")
  assert slug("β-VAE latent classifiers (`beta_vae`)") == (
      "β-vae-latent-classifiers-beta_vae")
  assert anchors("# A\n## A\n```sh\n# not a heading\n```\n### A\n") == {
      "a", "a-1", "a-2"}


def test_a_broken_link_is_found(tmp_path, monkeypatch):
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "page.md").write_text(
      "# Page\n\n## Here\n\n[ok](#here) [ok](../README.md) "
      "![gone](figures/gone.png) [bad](#there) `[code](nowhere.md)`\n"
      "```sh\n[fenced](nowhere.md)\n```\n[web](https://example.com/x)\n",
      encoding="utf-8")
  (tmp_path / "README.md").write_text("[up](../outside.md)\n",
                                      encoding="utf-8")
  monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
  assert broken("docs/page.md") == [
      "docs/page.md: figures/gone.png: no such file",
      "docs/page.md: #there: no such heading"]
  assert broken("README.md") == ["README.md: ../outside.md leaves the checkout"]


def test_the_readme_links_every_docs_page():
  linked = {os.path.normpath(target.partition("#")[0])
            for _, target in links("README.md")}
  assert set(_pages()[1:]) <= linked


@pytest.mark.parametrize("page", _pages())
def test_every_relative_link_and_image_exists(page):
  assert links(page) or page != "README.md"
  assert broken(page) == []
