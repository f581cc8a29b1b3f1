//! Integration tests for bastion-crypto: RFC vectors, key files, the key ring and JWKS, field
//! encryption (U5).

mod field;
mod keys;
mod thumbprint;
