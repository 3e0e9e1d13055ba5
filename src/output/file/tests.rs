use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;

use super::*;

/// Writes through to the file until `left` bytes are used, then fails as a full disk does
/// (a short write, then `ENOSPC`).
pub(super) struct FailAfter<'a> {
    pub(super) file: &'a File,
    pub(super) left: usize,
}

impl Write for FailAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = (&*self.file).write(&buf[..buf.len().min(self.left)])?;
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.file).flush()
    }
}

const TABLE: &str = "t.a";

fn events(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            date_ms: i as i64,
            key: [0; 32],
            json: Bytes::from(format!(
                r#"{{"id":"{prefix}{i}","pad":"{}"}}"#,
                "x".repeat(40)
            )),
        })
        .collect()
}

fn lines(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{}\n", std::str::from_utf8(&e.json).unwrap()))
        .collect()
}

fn contents(dir: &Path) -> String {
    std::fs::read_to_string(FileOutput::path_for(dir, TABLE)).unwrap()
}

fn output(dir: &Path) -> FileOutput {
    FileOutput::new("local".into(), dir.to_owned(), DEFAULT_MODE)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_failing_midway_leaves_nothing_and_the_retry_confirms_the_exact_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 50), events("b", 80));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap();
    assert_eq!(len_a, lines(&a).len() as u64);

    // The disk fills in the middle of a line of the second batch.
    out.fail_after = Some(1_000);
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert_eq!(
        contents(dir.path()),
        lines(&a),
        "the failed write left bytes behind"
    );

    // The retry writes the batch whole, and the confirmed length is the file's.
    let len_b = out.deliver(TABLE, &b).await.unwrap().unwrap();
    let want = lines(&a) + &lines(&b);
    assert_eq!(contents(dir.path()), want);
    assert_eq!(len_b, want.len() as u64);

    // A resume from that confirmed length cuts nothing.
    let mut restarted = output(dir.path());
    assert_eq!(
        restarted.resume(TABLE, Some(len_b)).await.unwrap(),
        Some(len_b)
    );
    assert_eq!(contents(dir.path()), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handle_dropped_after_a_failure_is_cut_back_before_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 5), events("b", 7));
    out.deliver(TABLE, &a).await.unwrap();
    // As if cutting back after a failed write had failed too: the remains are still there.
    let path = FileOutput::path_for(dir.path(), TABLE);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"id":"partial"#)
        .unwrap();
    out.files.get_mut(TABLE).unwrap().file = None;

    let len = out.deliver(TABLE, &b).await.unwrap().unwrap();
    let want = lines(&a) + &lines(&b);
    assert_eq!(contents(dir.path()), want);
    assert_eq!(len, want.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_cuts_to_the_committed_length_even_with_a_broken_handle() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 5), events("b", 7));
    let committed = out.deliver(TABLE, &a).await.unwrap().unwrap();
    out.deliver(TABLE, &b).await.unwrap(); // confirmed by this output, never checkpointed
    out.files.get_mut(TABLE).unwrap().file = None;
    assert_eq!(
        out.resume(TABLE, Some(committed)).await.unwrap(),
        Some(committed)
    );
    assert_eq!(contents(dir.path()), lines(&a));
    let len = out.deliver(TABLE, &b).await.unwrap().unwrap();
    assert_eq!(len, (lines(&a) + &lines(&b)).len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_files_get_the_mode_exactly_and_existing_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // 0666 would be narrowed to 0644 by the usual umask 022 if it were only passed to open(2).
    let mut out = FileOutput::new("local".into(), dir.path().to_owned(), 0o666);
    out.deliver(TABLE, &events("a", 1)).await.unwrap();
    assert_eq!(mode_of(&FileOutput::path_for(dir.path(), TABLE)), 0o666);

    let existing = FileOutput::path_for(dir.path(), "t.b");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut out = output(dir.path());
    out.deliver("t.b", &events("b", 1)).await.unwrap();
    assert_eq!(mode_of(&existing), 0o600);
}

/// Takes at most `max` bytes a call, across slice boundaries, as a kernel may on a short write.
struct Short {
    out: Vec<u8>,
    max: usize,
    calls: usize,
}

impl Write for Short {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.calls += 1;
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.max - n);
            self.out.extend_from_slice(&b[..take]);
            n += take;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The vectored write gives every line once and whole, across chunks of slices and short
/// writes that end in the middle of an event or between an event and its newline.
#[test]
fn lines_are_written_whole_across_short_vectored_writes() {
    let batch = events("v", 1_300); // three chunks of slices (512 events each at most)
    let want = lines(&batch);
    for max in [1, 7, 61, 62, 4_096, usize::MAX] {
        let mut w = Short {
            out: Vec::new(),
            max,
            calls: 0,
        };
        let written = write_lines(&mut w, &batch).unwrap();
        assert_eq!(written, want.len() as u64, "max {max}");
        assert_eq!(String::from_utf8(w.out).unwrap(), want, "max {max}");
        if max == usize::MAX {
            assert_eq!(w.calls, 3, "one call per chunk of 512 events");
        }
    }
}
