"""Writes the test certificates (tls_certs.Certs) into the directory given,
for tests that are not written in Python (tests/api/test_tls_auth.c)."""
import sys

import tls_certs

if __name__ == "__main__":
    tls_certs.Certs(sys.argv[1])
