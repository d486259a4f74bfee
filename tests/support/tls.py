"""A throwaway certificate authority for tests: EC P-256 keys (fast to make),
certificates valid for an hour, the server's for 127.0.0.1 and localhost."""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki"]


def _name(common_name):
  return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path, data, mode=0o644):
  with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode),
            "wb") as f:
    f.write(data)
  return path


class Pki:
  """A CA in `directory` (`ca`: its certificate's PEM file) that issues
  certificates: `issue(name, usage)` -> (certificate file, key file)."""

  def __init__(self, directory, name="tfvaeclf test CA"):
    self._directory = directory
    self._key = ec.generate_private_key(ec.SECP256R1())
    self._name = _name(name)
    now = datetime.datetime.now(datetime.timezone.utc)
    self._valid = (now - datetime.timedelta(minutes=5),
                   now + datetime.timedelta(hours=1))
    signs_only = x509.KeyUsage(
        digital_signature=False, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        key_cert_sign=True, crl_sign=True, encipher_only=False,
        decipher_only=False)
    certificate = (
        self._builder(self._name, self._key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                       critical=True)
        .add_extension(signs_only, critical=True))
    self.ca = _write(os.path.join(directory, "ca.pem"),
                     self._sign(certificate))

  def _builder(self, subject, public_key):
    return (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(self._name).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0]).not_valid_after(self._valid[1]))

  def _sign(self, builder):
    return builder.sign(self._key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)

  def issue(self, name, usage):
    """A certificate and key for `name`; `usage` "server" (for 127.0.0.1
    and localhost) or "client"."""
    key = ec.generate_private_key(ec.SECP256R1())
    purpose = {"server": ExtendedKeyUsageOID.SERVER_AUTH,
               "client": ExtendedKeyUsageOID.CLIENT_AUTH}[usage]
    builder = (
        self._builder(_name(name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False))
    if usage == "server":
      builder = builder.add_extension(x509.SubjectAlternativeName([
          x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
          x509.DNSName("localhost")]), critical=False)
    stem = os.path.join(self._directory, name)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (_write(f"{stem}.pem", self._sign(builder)),
            _write(f"{stem}.key", key_pem, mode=0o600))
