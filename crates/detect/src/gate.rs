//! The per-value prefilter: which bytes a value contains (one pass), and a bit set of the rules
//! whose required literals occur in it. Clean values arm almost nothing, so almost no rule runs.

use crate::normalize::Transform;

/// Which ASCII bytes occur in a value, and whether it has anything beyond ASCII.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Features {
    bits: [u64; 2],
    pub non_ascii: bool,
}

impl Features {
    pub(crate) fn of(text: &str) -> Features {
        Features::of_bytes(text.as_bytes())
    }

    /// The features of `bytes` (see [`Features::of`]).
    pub(crate) fn of_bytes(bytes: &[u8]) -> Features {
        // Without a branch per byte, and four bytes per step: every value goes through here.
        // Bytes from 0x80 land in the upper two words, which only say "non-ASCII".
        let mut words = [0u64; 4];
        let mut chunks = bytes.chunks_exact(4);
        for c in &mut chunks {
            words[usize::from(c[0] >> 6)] |= 1u64 << (c[0] & 63);
            words[usize::from(c[1] >> 6)] |= 1u64 << (c[1] & 63);
            words[usize::from(c[2] >> 6)] |= 1u64 << (c[2] & 63);
            words[usize::from(c[3] >> 6)] |= 1u64 << (c[3] & 63);
        }
        for &b in chunks.remainder() {
            words[usize::from(b >> 6)] |= 1u64 << (b & 63);
        }
        Features::from_words(words)
    }

    /// The features of a text whose bytes `b` were recorded as bit `b % 64` of `words[b / 64]`.
    #[inline]
    pub(crate) fn from_words(words: [u64; 4]) -> Features {
        Features {
            bits: [words[0], words[1]],
            non_ascii: words[2] | words[3] != 0,
        }
    }

    /// These features without the bytes of `set` (the features of the value with those
    /// bytes removed).
    pub(crate) fn without(&self, set: &[u64; 2]) -> Features {
        Features {
            bits: [self.bits[0] & !set[0], self.bits[1] & !set[1]],
            non_ascii: self.non_ascii,
        }
    }

    pub(crate) fn has(&self, b: u8) -> bool {
        b < 0x80 && self.bits[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
    }

    pub(crate) fn any(&self, set: &[u8]) -> bool {
        set.iter().any(|&b| self.has(b))
    }

    /// Whether `set` (a byte mask built with [`mask`]) intersects this value's bytes.
    pub(crate) fn intersects(&self, set: &[u64; 2]) -> bool {
        self.bits[0] & set[0] != 0 || self.bits[1] & set[1] != 0
    }

    fn whitespace(&self) -> bool {
        self.intersects(&exact_mask(b" \t\n\r\x0b\x0c"))
    }

    /// The mask (see [`Transform::bit`]) of the transforms that are transparent on `text`.
    /// Only transforms whose trigger bytes occur are looked at more closely, so a plain value
    /// costs a few mask tests.
    pub(crate) fn transparent_mask(&self, text: &(impl AsRef<[u8]> + ?Sized), wanted: u16) -> u16 {
        if !self.non_ascii && !self.intersects(&ANY_TRIGGER) {
            return wanted;
        }
        // The transforms some byte of the value may trigger, from the bytes present.
        let mut maybe = if self.non_ascii {
            NON_ASCII_SENSITIVE
        } else {
            0
        };
        for (w, word) in self.bits.iter().enumerate() {
            let mut present = word & ANY_TRIGGER[w];
            while present != 0 {
                let b = w * 64 + present.trailing_zeros() as usize;
                maybe |= BYTE_TRANSFORMS[b];
                present &= present - 1;
            }
        }
        let mut mask = wanted;
        let mut check = maybe & wanted;
        while check != 0 {
            let bit = check & check.wrapping_neg();
            check &= check - 1;
            let t = Transform::ALL[bit.trailing_zeros() as usize];
            if !self.transparent(t, text) {
                mask &= !bit;
            }
        }
        mask
    }

    /// Whether `t` leaves `text` (whose features these are) unchanged up to ASCII case, so
    /// that literals found in `text` case-insensitively are exactly those of the transformed
    /// value.
    pub(crate) fn transparent(&self, t: Transform, text: &(impl AsRef<[u8]> + ?Sized)) -> bool {
        match t {
            Transform::Lowercase => !self.non_ascii,
            Transform::Shell => !self.non_ascii && !self.intersects(&exact_mask(b"'\"^\\$`{")),
            Transform::Path => {
                !self.has(b'\\')
                    && !(self.has(b'/')
                        && (has_pair(text, b'/', b'/')
                            || text.as_ref().windows(3).any(|w| w == b"/./")))
            }
            Transform::RemoveWhitespace => !self.whitespace() && !self.non_ascii,
            Transform::CompressWhitespace => {
                !self.non_ascii
                    && !self.intersects(&exact_mask(b"\t\n\r\x0b\x0c"))
                    && !has_pair(text, b' ', b' ')
            }
            Transform::RemoveComments => {
                let block = self.has(b'*') && has_pair(text, b'/', b'*');
                let line = self.has(b'-') && has_pair(text, b'-', b'-');
                !(self.has(b'#') || block || line)
            }
            Transform::Log4j => !self.has(b'$') || !has_pair(text, b'$', b'{'),
            Transform::RemoveNulls => !self.has(0),
            Transform::Unicode => !self.non_ascii,
            Transform::UrlDecode => !self.has(b'%'),
            Transform::HtmlDecode => !self.has(b'&'),
            Transform::JsDecode => !self.has(b'\\'),
            // `decode` of a value without escapes, entities, NULs or non-ASCII is the identity.
            Transform::Decode => !self.non_ascii && !self.intersects(&exact_mask(b"%&\\\0")),
        }
    }
}

/// Whether the two bytes `a b` occur next to each other in `text` (a plain loop: the values
/// are short, and a substring searcher's setup costs more than the search).
pub(crate) fn has_pair(text: &(impl AsRef<[u8]> + ?Sized), a: u8, b: u8) -> bool {
    text.as_ref().windows(2).any(|w| w[0] == a && w[1] == b)
}

/// Per transform (by discriminant): the ASCII bytes without which it is transparent (see
/// [`Features::transparent`]; non-ASCII input is [`Transform::non_ascii_sensitive`]).
pub(crate) const TRIGGERS: [[u64; 2]; 13] = [
    exact_mask(b"%&\\\0"),          // Decode
    exact_mask(b"%"),               // UrlDecode
    exact_mask(b"&"),               // HtmlDecode
    exact_mask(b"\\"),              // JsDecode
    exact_mask(b""),                // Unicode
    exact_mask(b"\0"),              // RemoveNulls
    exact_mask(b""),                // Lowercase
    exact_mask(b" \t\n\r\x0b\x0c"), // CompressWhitespace
    exact_mask(b" \t\n\r\x0b\x0c"), // RemoveWhitespace
    exact_mask(b"#*-"),             // RemoveComments
    exact_mask(b"'\"^\\$`{"),       // Shell
    exact_mask(b"\\/"),             // Path
    exact_mask(b"$"),               // Log4j
];

/// Per ASCII byte: the transforms (as a [`Transform::bit`] mask) whose trigger bytes hold it.
static BYTE_TRANSFORMS: [u16; 128] = {
    let mut table = [0u16; 128];
    let mut t = 0;
    while t < TRIGGERS.len() {
        let mut b = 0;
        while b < 128 {
            if TRIGGERS[t][b >> 6] & (1u64 << (b & 63)) != 0 {
                table[b] |= 1 << t;
            }
            b += 1;
        }
        t += 1;
    }
    table
};

/// The transforms that non-ASCII input may make change more than ASCII case (see
/// [`Transform::non_ascii_sensitive`]).
const NON_ASCII_SENSITIVE: u16 = {
    let mut mask = 0u16;
    let mut t = 0;
    while t < Transform::ALL.len() {
        if Transform::ALL[t].non_ascii_sensitive() {
            mask |= 1 << t;
        }
        t += 1;
    }
    mask
};

/// The union of [`TRIGGERS`].
const ANY_TRIGGER: [u64; 2] = {
    let mut m = [0u64; 2];
    let mut i = 0;
    while i < TRIGGERS.len() {
        m[0] |= TRIGGERS[i][0];
        m[1] |= TRIGGERS[i][1];
        i += 1;
    }
    m
};

/// A byte mask of exactly `bytes` (ASCII only).
pub(crate) const fn exact_mask(bytes: &[u8]) -> [u64; 2] {
    let mut m = [0u64; 2];
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        m[(b >> 6) as usize] |= 1u64 << (b & 63);
        i += 1;
    }
    m
}

/// A byte mask of `bytes`, both ASCII cases of letters.
pub(crate) fn mask(bytes: &[u8]) -> [u64; 2] {
    let mut m = [0u64; 2];
    for &b in bytes {
        for c in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
            if c < 0x80 {
                m[usize::from(c >> 6)] |= 1u64 << (c & 63);
            }
        }
    }
    m
}

/// A fixed-size bit set of rule indexes: inline up to 256 rules (the built-in set fits), so
/// the per-request buffers cost no allocation.
#[derive(Debug, Clone)]
pub(crate) enum Bits {
    Inline { len: usize, words: [u64; 4] },
    Heap(Vec<u64>),
}

impl Default for Bits {
    fn default() -> Bits {
        Bits::with_len(0)
    }
}

impl Bits {
    pub(crate) fn with_len(n: usize) -> Bits {
        let len = n.div_ceil(64);
        if len <= 4 {
            Bits::Inline { len, words: [0; 4] }
        } else {
            Bits::Heap(vec![0; len])
        }
    }

    fn words(&self) -> &[u64] {
        match self {
            Bits::Inline { len, words } => &words[..*len],
            Bits::Heap(words) => words,
        }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Bits::Inline { len, words } => &mut words[..*len],
            Bits::Heap(words) => words,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.words_mut().iter_mut().for_each(|w| *w = 0);
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.words_mut()[i / 64] |= 1u64 << (i % 64);
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words()[i / 64] & (1u64 << (i % 64)) != 0
    }

    pub(crate) fn intersects(&self, other: &Bits) -> bool {
        self.words()
            .iter()
            .zip(other.words())
            .any(|(a, b)| a & b != 0)
    }

    /// The indexes set in both `self` and `other`.
    pub(crate) fn iter_and<'a>(&'a self, other: &'a Bits) -> impl Iterator<Item = usize> + 'a {
        self.words()
            .iter()
            .zip(other.words())
            .enumerate()
            .flat_map(|(w, (a, b))| {
                let mut word = a & b;
                std::iter::from_fn(move || {
                    (word != 0).then(|| {
                        let bit = word.trailing_zeros() as usize;
                        word &= word - 1;
                        w * 64 + bit
                    })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_and_transparency() {
        let f = Features::of("Hello world");
        assert!(f.has(b'H') && f.has(b' ') && !f.has(b'$'));
        assert!(f.transparent(Transform::Lowercase, "Hello world"));
        assert!(!f.transparent(Transform::RemoveWhitespace, "Hello world"));
        let t = "a//b";
        assert!(!Features::of(t).transparent(Transform::Path, t));
        let t = "a/b/c";
        assert!(Features::of(t).transparent(Transform::Path, t));
        let t = "a\\b";
        assert!(!Features::of(t).transparent(Transform::Path, t));
        let t = "w'h'o";
        assert!(!Features::of(t).transparent(Transform::Shell, t));
        assert!(mask(b"a")[1] & (1 << (b'A' - 64)) != 0);
    }

    /// The four-bytes-a-step byte pass says exactly what a byte-by-byte pass says, whatever
    /// the length and wherever a non-ASCII character falls.
    #[test]
    fn features_match_a_byte_by_byte_pass() {
        let samples = [
            "",
            "a",
            "abc",
            "abcd",
            "Blue cotton shirt",
            "\0\x7f~ {}",
            "caf\u{e9}",
            "\u{e9}abc",
            "abcd\u{2019}",
            "x\u{1f600}",
        ];
        for text in samples {
            let f = Features::of(text);
            assert_eq!(f.non_ascii, !text.is_ascii(), "{text:?}");
            for b in 0u8..0x80 {
                assert_eq!(f.has(b), text.as_bytes().contains(&b), "{text:?} byte {b}");
            }
        }
    }
}
