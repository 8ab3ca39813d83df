//! Unicode folding: compatibility forms (full-width `＜`, circled digits `①`, ligatures) become
//! their plain equivalents (NFKC), and invisible characters attackers use to split keywords
//! are dropped.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// NFKC plus removal of zero-width and other format characters.
pub fn fold_unicode(input: &str) -> Cow<'_, str> {
    if input.is_ascii() {
        return Cow::Borrowed(input);
    }
    Cow::Owned(input.nfkc().filter(|&c| !is_invisible(c)).collect())
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}' | '\u{180e}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_full_width_and_invisible() {
        assert_eq!(fold_unicode("＜ｓｃｒｉｐｔ＞"), "<script>");
        assert_eq!(fold_unicode("①②⑦.0.0.1"), "127.0.0.1");
        assert_eq!(fold_unicode("sel\u{200b}ect"), "select");
        assert_eq!(fold_unicode("café"), "café");
    }
}
