//! Keys and bucket names in URL paths.
//!
//! A key is arbitrary bytes (1 to 1024 of them). It travels as ONE path
//! segment, so everything except RFC 3986's unreserved characters
//! (`A-Z a-z 0-9 - . _ ~`) is percent-encoded: `/` becomes `%2F`, a space
//! `%20`, each byte of a multi-byte UTF-8 character its own `%XX`. The node
//! decodes the segment back to the exact bytes.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// Everything but the unreserved characters `-._~` (alphanumerics are never
/// in a `NON_ALPHANUMERIC`-derived set).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `bytes` as a single URL path segment.
///
/// `.` and `..` alone are encoded as `%2E` / `%2E%2E`: left bare, an HTTP
/// stack may resolve them as "this/parent directory" and reach another route.
pub fn encode_segment(bytes: &[u8]) -> String {
    match bytes {
        b"." => "%2E".to_string(),
        b".." => "%2E%2E".to_string(),
        _ => percent_encode(bytes, SEGMENT).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode;

    #[test]
    fn unreserved_characters_pass_through() {
        assert_eq!(encode_segment(b"Az09-._~"), "Az09-._~");
    }

    #[test]
    fn slash_space_and_reserved_characters_are_encoded() {
        assert_eq!(encode_segment(b"a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment(b"?#%&+=:@"), "%3F%23%25%26%2B%3D%3A%40");
    }

    #[test]
    fn unicode_is_encoded_byte_by_byte() {
        assert_eq!(encode_segment("é".as_bytes()), "%C3%A9");
        assert_eq!(encode_segment("鍵🔑".as_bytes()), "%E9%8D%B5%F0%9F%94%91");
    }

    #[test]
    fn dot_segments_are_never_bare() {
        assert_eq!(encode_segment(b"."), "%2E");
        assert_eq!(encode_segment(b".."), "%2E%2E");
        assert_eq!(encode_segment(b"..."), "...");
    }

    #[test]
    fn every_byte_round_trips_and_stays_in_one_segment() {
        let all: Vec<u8> = (0..=255u8).collect();
        let enc = encode_segment(&all);
        assert!(!enc.contains('/'));
        assert!(enc.bytes().all(|b| b.is_ascii_graphic()));
        let dec: Vec<u8> = percent_decode(enc.as_bytes()).collect();
        assert_eq!(dec, all);
        for b in 0..=255u8 {
            let e = encode_segment(&[b]);
            let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            if unreserved && b != b'.' {
                assert_eq!(e.as_bytes(), [b]);
            } else {
                assert_eq!(e, format!("%{b:02X}"));
            }
        }
    }
}
