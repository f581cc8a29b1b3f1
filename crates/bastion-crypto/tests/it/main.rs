//! Integration tests for bastion-crypto: RFC vectors, key files, the key ring and JWKS.

mod keys;
mod thumbprint;
