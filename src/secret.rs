//! Secrets (the API key, the Redis password), kept out of every log line, error message, URL
//! and state file.

use std::fmt;

/// The Reporting API key. `Debug` and `Display` print only its masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        Self(key)
    }

    /// The key itself, for the one place that needs it: the request header or query.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Devo's masked form: the first four and last two characters (`1a2b...9z`). Keys shorter
    /// than 12 characters are masked whole, so that the mask never reveals most of a short key.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks any secret the way [`ApiKey::masked`] does.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "****".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}...{tail}")
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Any other secret (the Redis password): `Debug` and `Display` print only `****`, whatever
/// its length (unlike the API key, whose masked form helps tell keys apart, a password's
/// characters help nobody).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself, for the one place that sends it (the Redis `AUTH`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Text that came from elsewhere (an error body), fit to quote in a log line or an error:
/// every secret replaced by `****`, *then* cut to at most `max` bytes on a character boundary.
/// In that order: a secret straddling the cut would otherwise survive the replacement in part.
pub fn redact_then_cut(body: &str, secrets: &[&str], max: usize) -> String {
    // Replacing whole UTF-8 secrets in UTF-8 text leaves it UTF-8: the lossy step changes
    // nothing.
    let mut text = String::from_utf8_lossy(&redact(body.as_bytes(), secrets)).into_owned();
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `text` with every occurrence of each of `secrets` replaced by `****`: for text that came
/// from elsewhere (a receiver echoing a token in its error body). Redact the whole text before
/// cutting an excerpt of it: a secret cut in two is no longer found, and its start would show.
pub fn redact<S: AsRef<[u8]>>(text: &[u8], secrets: &[S]) -> Vec<u8> {
    let mut text = text.to_vec();
    for secret in secrets.iter().map(AsRef::as_ref) {
        if secret.is_empty() || text.len() < secret.len() {
            continue;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            if text[i..].starts_with(secret) {
                out.extend_from_slice(b"****");
                i += secret.len();
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_devo() {
        let key = ApiKey::new("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z".into());
        assert_eq!(key.masked(), "1a2b...9z");
        assert_eq!(format!("{key:?} {key}"), "ApiKey(1a2b...9z) 1a2b...9z");
        assert_eq!(mask("short"), "****");
    }

    #[test]
    fn a_secret_straddling_the_cut_is_removed_whole() {
        let key = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c9z";
        let body = format!("{}{key} is not valid", "x".repeat(290));
        let quoted = redact_then_cut(&body, &[key, ""], 300);
        assert_eq!(quoted, format!("{}**** is no", "x".repeat(290)));
        // Cut on a character boundary: "é" is two bytes, and byte 3 falls inside the second.
        assert_eq!(redact_then_cut("ééé", &[], 3), "é");
    }

    #[test]
    fn other_secrets_never_show() {
        let s = Secret::new("a-rather-long-redis-password".into());
        assert_eq!(format!("{s:?} {s}"), "Secret(****) ****");
        assert_eq!(s.expose(), "a-rather-long-redis-password");
    }

    #[test]
    fn redact_replaces_every_occurrence_of_every_secret() {
        let secrets = ["tok3n".to_owned(), String::new(), "pw".to_owned()];
        assert_eq!(
            redact(b"a tok3n, tok3n pw!", &secrets),
            b"a ****, **** ****!"
        );
        assert_eq!(redact(b"tok", &secrets), b"tok");
    }
}
