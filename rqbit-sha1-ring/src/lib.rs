//! librqbit's hashing interface (`ISha1`, `ISha256`, `Sha1`, `Sha256`, as in the upstream
//! `librqbit-sha1-wrapper` 9.1) implemented with `ring`'s digests, which use the same
//! assembly as BoringSSL/OpenSSL (SHA-NI where the CPU has it).

use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY, SHA256};

pub trait ISha1 {
    fn new() -> Self;
    fn update(&mut self, buf: &[u8]);
    fn finish(self) -> [u8; 20];
}

/// SHA-256 for BEP 52 (BitTorrent v2).
pub trait ISha256 {
    fn new() -> Self;
    fn update(&mut self, buf: &[u8]);
    fn finish(self) -> [u8; 32];

    fn finish_id32(self) -> [u8; 32]
    where
        Self: Sized,
    {
        self.finish()
    }
}

pub struct Sha1 {
    ctx: Context,
}

impl ISha1 for Sha1 {
    fn new() -> Self {
        Self {
            ctx: Context::new(&SHA1_FOR_LEGACY_USE_ONLY),
        }
    }

    fn update(&mut self, buf: &[u8]) {
        self.ctx.update(buf);
    }

    fn finish(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        // A SHA-1 digest is always 20 bytes.
        out.copy_from_slice(self.ctx.finish().as_ref());
        out
    }
}

pub struct Sha256 {
    ctx: Context,
}

impl ISha256 for Sha256 {
    fn new() -> Self {
        Self {
            ctx: Context::new(&SHA256),
        }
    }

    fn update(&mut self, buf: &[u8]) {
        self.ctx.update(buf);
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // A SHA-256 digest is always 32 bytes.
        out.copy_from_slice(self.ctx.finish().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = <Sha1 as ISha1>::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(
            ISha1::finish(h),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
        let h = <Sha256 as ISha256>::new();
        assert_eq!(
            ISha256::finish(h)[..4],
            [0xe3, 0xb0, 0xc4, 0x42],
            "SHA-256 of the empty string"
        );
    }
}
