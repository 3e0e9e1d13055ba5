//! RELP frames: `TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER`, the trailer being `\n`
//! (librelp's `doc/relp.html`). TXNR is 1 to 999,999,999 (0 for the server's `serverclose`),
//! DATALEN the byte length of DATA, written without SP DATA when it is 0.
//!
//! The parser is incremental: it reads one frame from the start of a buffer that may hold less
//! (`Ok(None)`: read more) or more (the frame's length is returned). It reads what a receiver
//! sends us, so it never panics on any bytes and bounds what it accepts (fuzzed in the tests).

/// The largest transaction number; the next one after it is 1 (librelp wraps the same way).
pub const MAX_TXNR: u32 = 999_999_999;

/// The largest DATA we accept in a frame from the receiver. Responses are a status line and,
/// for `open`, a few offers; librelp's own limit for them is far below this.
pub const MAX_RESPONSE_DATA: usize = 128 * 1024;

/// Longest command name (librelp: 32).
const MAX_COMMAND: usize = 32;

/// Digits of TXNR and DATALEN (both at most 9 digits).
const MAX_DIGITS: usize = 9;

/// One frame, borrowing its command and data from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub txnr: u32,
    pub command: &'a str,
    pub data: &'a [u8],
}

/// Why the receiver's bytes are not a RELP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed RELP frame: {0}")]
    Malformed(&'static str),
    #[error("RELP frame with {0} bytes of data, more than the {MAX_RESPONSE_DATA} accepted")]
    TooLarge(usize),
}

/// Appends the frame `txnr command datalen data\n` to `out`.
pub fn encode(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Reads a number of 1 to 9 digits ending at `end_byte`, from `buf[at..]`. `Ok(None)` when the
/// buffer ends first; returns the number and the index after `end_byte`.
fn number(buf: &[u8], at: usize, ends: &[u8]) -> Result<Option<(u32, usize, u8)>, FrameError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.get(at..).unwrap_or_default().iter().enumerate() {
        match b {
            b'0'..=b'9' if i < MAX_DIGITS => value = value * 10 + u32::from(b - b'0'),
            _ if i > 0 && ends.contains(&b) => return Ok(Some((value, at + i + 1, b))),
            b'0'..=b'9' => return Err(FrameError::Malformed("a number of more than 9 digits")),
            _ => return Err(FrameError::Malformed("a number was expected")),
        }
    }
    Ok(None)
}

/// Parses one frame from the start of `buf`: the frame and its length in bytes, or `Ok(None)`
/// when `buf` holds only part of a frame.
///
/// # Errors
/// [`FrameError`] when the bytes cannot start a valid frame (the connection is then unusable).
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some((txnr, at, _)) = number(buf, 0, b" ")? else {
        return Ok(None);
    };
    let rest = &buf[at..];
    let Some(space) = rest.iter().take(MAX_COMMAND + 1).position(|&b| b == b' ') else {
        if rest.len() > MAX_COMMAND {
            return Err(FrameError::Malformed("a command of more than 32 letters"));
        }
        if rest.iter().all(u8::is_ascii_alphabetic) {
            return Ok(None);
        }
        return Err(FrameError::Malformed("a command must be letters"));
    };
    let command = &rest[..space];
    if command.is_empty() || !command.iter().all(u8::is_ascii_alphabetic) {
        return Err(FrameError::Malformed("a command must be letters"));
    }
    let command = std::str::from_utf8(command).expect("ASCII letters are UTF-8");
    let Some((len, at, end)) = number(buf, at + space + 1, b" \n")? else {
        return Ok(None);
    };
    let len = len as usize;
    match (len, end) {
        (0, b'\n') => {
            return Ok(Some((
                Frame {
                    txnr,
                    command,
                    data: &[],
                },
                at,
            )))
        }
        (0, _) => {
            return Err(FrameError::Malformed(
                "DATALEN 0 must be followed by the trailer",
            ))
        }
        (_, b'\n') => return Err(FrameError::Malformed("DATALEN > 0 without data")),
        _ if len > MAX_RESPONSE_DATA => return Err(FrameError::TooLarge(len)),
        _ => {}
    }
    let Some(&trailer) = buf.get(at + len) else {
        return Ok(None);
    };
    if trailer != b'\n' {
        return Err(FrameError::Malformed("DATA not followed by the trailer"));
    }
    let data = &buf[at..at + len];
    Ok(Some((
        Frame {
            txnr,
            command,
            data,
        },
        at + len + 1,
    )))
}

/// The status of an `rsp` frame's data: `CODE [SP TEXT] [LF more]`, e.g. `200 OK`. Returns the
/// code and the text (lossy UTF-8), or `None` when the data does not start with 3 digits.
pub fn rsp_status(data: &[u8]) -> Option<(u16, std::borrow::Cow<'_, str>)> {
    let code = data.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || data.get(3).is_some_and(|&b| b != b' ' && b != b'\n')
    {
        return None;
    }
    let code = code.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
    let text = data.get(4..).unwrap_or_default();
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    // Borrowed unless the text is not UTF-8: no allocation per acknowledged record.
    Some((code, String::from_utf8_lossy(line)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_responses_rsyslog_sends() {
        let open = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";
        let (f, n) = parse(open).unwrap().unwrap();
        assert_eq!((f.txnr, f.command, n), (1, "rsp", open.len()));
        assert_eq!(rsp_status(f.data), Some((200, "OK".into())));
        let two = b"2 rsp 6 200 OK\n0 serverclose 0\n";
        let (f, n) = parse(two).unwrap().unwrap();
        assert_eq!((f.txnr, f.data, n), (2, &b"200 OK"[..], 15));
        let (f, n) = parse(&two[n..]).unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command, f.data, n),
            (0, "serverclose", &b""[..], 16)
        );
        assert_eq!(
            rsp_status(b"500 unknown command 'x'"),
            Some((500, "unknown command 'x'".into()))
        );
        assert_eq!(rsp_status(b"20"), None);
        assert_eq!(rsp_status(b"2000"), None);
    }

    #[test]
    fn a_partial_frame_asks_for_more_and_garbage_is_an_error() {
        let frame = b"12 rsp 6 200 OK\n";
        for end in 0..frame.len() {
            assert_eq!(parse(&frame[..end]), Ok(None), "prefix of {end} bytes");
        }
        for bad in [
            &b"x rsp 0\n"[..],
            b"1 r5p 0\n",
            b"1 rsp 0 \n",
            b"1 rsp 3\n",
            b"1 rsp 2 abc\n",
            b"1234567890 rsp 0\n",
            b"1  rsp 0\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"1 rsp 999999 "), Err(FrameError::TooLarge(999_999)));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((f, n))) = parse(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!(f.data.len() <= MAX_RESPONSE_DATA);
            }
            let _ = rsp_status(&bytes);
        }

        #[test]
        fn frames_round_trip(
            txnr in 0..=MAX_TXNR,
            command in "[a-z]{1,32}",
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut wire = Vec::new();
            encode(&mut wire, txnr, &command, &data);
            let len = wire.len();
            wire.extend_from_slice(&tail);
            let (f, n) = parse(&wire).unwrap().unwrap();
            prop_assert_eq!(n, len);
            prop_assert_eq!(f, Frame { txnr, command: &command, data: &data });
            // Every strict prefix is incomplete, never an error.
            for end in [0, 1, len / 2, len - 1] {
                prop_assert_eq!(parse(&wire[..end]), Ok(None));
            }
        }
    }
}
