//! A SHA-256 whose state is plain data: the hash of a growing file can be written down
//! after each append (with the file's chunks) and resumed by any server, without reading
//! the file again.

use sha2::digest::generic_array::GenericArray;

use crate::Sha256;

/// SHA-256's initial state.
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const BLOCK: usize = 64;

/// The SHA-256 of the bytes seen so far, resumable from [`RunningSha256::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSha256 {
    words: [u32; 8],
    len: u64,
    tail: Vec<u8>,
}

impl Default for RunningSha256 {
    fn default() -> Self {
        RunningSha256 {
            words: H0,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
        }
    }
}

impl RunningSha256 {
    /// The hash of no bytes yet.
    pub fn new() -> RunningSha256 {
        RunningSha256::default()
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < BLOCK {
                return;
            }
            compress(&mut self.words, &self.tail);
            self.tail.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        for block in data[..whole].chunks_exact(BLOCK) {
            compress(&mut self.words, block);
        }
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// The SHA-256 of the bytes hashed so far (the state goes on unchanged).
    pub fn finish(&self) -> Sha256 {
        let mut words = self.words;
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % BLOCK != BLOCK - 8 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len * 8).to_be_bytes());
        for block in last.chunks_exact(BLOCK) {
            compress(&mut words, block);
        }
        let digest: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        Sha256::from_stored(hex::encode(digest))
    }

    /// The state as hex: the eight words, then the bytes of the unfinished block (the
    /// length is not in it: whoever stores the state knows how many bytes it covers).
    pub fn state(&self) -> String {
        let words: Vec<u8> = self.words.iter().flat_map(|w| w.to_be_bytes()).collect();
        format!("{}{}", hex::encode(words), hex::encode(&self.tail))
    }

    /// Resumes from [`RunningSha256::state`] after `len` bytes; `None` if it does not fit.
    pub fn resume(state: &str, len: u64) -> Option<RunningSha256> {
        let bytes = hex::decode(state).ok()?;
        let tail = (len % BLOCK as u64) as usize;
        if bytes.len() != 32 + tail {
            return None;
        }
        let mut words = [0u32; 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        let mut resumed = RunningSha256 {
            words,
            len,
            tail: Vec::with_capacity(BLOCK),
        };
        resumed.tail.extend_from_slice(&bytes[32..]);
        Some(resumed)
    }
}

/// One 64-byte block into the state, read where it lies (no copy).
fn compress(words: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(words, std::slice::from_ref(GenericArray::from_slice(block)));
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    fn reference(data: &[u8]) -> Sha256 {
        Sha256::from_stored(hex::encode(sha2::Sha256::digest(data)))
    }

    #[test]
    fn matches_sha256_however_the_bytes_are_split_and_resumed() {
        let data: Vec<u8> = (0..5_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 1_000, 5_000] {
            let data = &data[..len];
            for split in [0, 1, 3, 63, 64, 100, len] {
                let split = split.min(len);
                let mut first = RunningSha256::new();
                first.update(&data[..split]);
                let mut resumed = RunningSha256::resume(&first.state(), split as u64)
                    .expect("the state fits its length");
                for piece in data[split..].chunks(37) {
                    resumed.update(piece);
                }
                assert_eq!(
                    resumed.finish(),
                    reference(data),
                    "len {len}, split {split}"
                );
            }
        }
    }

    #[test]
    fn a_state_of_the_wrong_length_is_refused() {
        let mut hash = RunningSha256::new();
        hash.update(b"abc");
        assert!(RunningSha256::resume(&hash.state(), 4).is_none());
        assert!(RunningSha256::resume("zz", 0).is_none());
        assert!(RunningSha256::resume(&hash.state(), 3).is_some());
    }
}
