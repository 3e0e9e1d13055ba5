//! Keyed pseudonyms (`method: hmac_sha256`): HMAC-SHA256 tokens of values.

use std::fmt;

use hmac::Mac;

use super::HMAC_PREFIX;

/// A keyed HMAC-SHA256 state. `Debug` never shows the key.
#[derive(Clone)]
pub struct HmacKey(hmac::Hmac<sha2::Sha256>);

impl HmacKey {
    /// Keys the HMAC. The key is hashed into the state once here, not per value.
    pub fn new(secret: &[u8]) -> HmacKey {
        // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
        HmacKey(hmac::Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// The token of `input`: the same input and key always give the same token.
    ///
    /// 16 bytes (128 bits) of the 32: half of the output is the shortest truncation RFC 2104
    /// §5 recommends, and collisions stay negligible (birthday bound ~2^64 distinct values),
    /// while the 37-character token is half the size in every stored event.
    pub fn token(&self, input: &[u8]) -> String {
        let mut out = String::with_capacity(HMAC_PREFIX.len() + 32);
        self.write_token(input, &mut out);
        out
    }

    /// [`token`](Self::token), appended to `out`.
    fn write_token(&self, input: &[u8], out: &mut String) {
        let mut mac = self.0.clone();
        mac.update(input);
        let tag = mac.finalize().into_bytes();
        let mut hex = [0u8; 32];
        hex::encode_to_slice(&tag[..16], &mut hex).expect("32 hex digits for 16 bytes");
        out.push_str(HMAC_PREFIX);
        out.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
    }

    /// The token of `input` as a JSON string. A token is ASCII letters, digits and `:`,
    /// which JSON never escapes, so its quotes are all it needs.
    pub(super) fn write_quoted_token(&self, input: &[u8], out: &mut String) {
        out.push('"');
        self.write_token(input, out);
        out.push('"');
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}
