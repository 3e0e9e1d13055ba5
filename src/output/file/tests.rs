use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use bytes::Bytes;

use super::*;

/// A faulty writer for one batch, made when the batch starts from the output's handle of the
/// file.
trait Fault: Send + Sync {
    fn on(self: Box<Self>, file: &File) -> Box<dyn Write + '_>;
}

/// The output's writes as a test injects them: the next batch goes through the fault, later
/// ones straight to the file.
struct NextBatch(Option<Box<dyn Fault>>);

impl BatchWrites for NextBatch {
    fn writer<'f>(&mut self, file: &'f File) -> Box<dyn Write + 'f> {
        match self.0.take() {
            Some(fault) => fault.on(file),
            None => Box::new(file),
        }
    }
}

/// Makes `out`'s next batch go through `fault`.
fn inject(out: &mut FileOutput, fault: impl Fault + 'static) {
    out.writes = Box::new(NextBatch(Some(Box::new(fault))));
}

/// The disk fills after this many bytes of the next batch.
struct DiskFullAfter(usize);

impl Fault for DiskFullAfter {
    fn on(self: Box<Self>, file: &File) -> Box<dyn Write + '_> {
        Box::new(FailAfter { file, left: self.0 })
    }
}

/// Writes through to the file until `left` bytes are used, then fails as a full disk does
/// (a short write, then `ENOSPC`).
struct FailAfter<'a> {
    file: &'a File,
    left: usize,
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

/// Writes through to the file, each call taking at most `max` bytes. "Another process" appends
/// `foreign` through its own handle once: right after the `calls`-th call returned (between
/// two calls), or with `calls` 0 inside the first call before its bytes (between the length
/// check and the write). Then, if `then_fail`, the next call fails as a full disk does.
struct Interfere {
    /// The output's handle, set when the batch starts.
    file: Option<File>,
    path: PathBuf,
    max: usize,
    calls: usize,
    foreign: Option<Vec<u8>>,
    /// The other process first cuts the file to this length (a new holder's resume).
    cut_to: Option<u64>,
    then_fail: bool,
}

impl Interfere {
    fn new(dir: &Path, calls: usize, foreign: &str) -> Interfere {
        Interfere {
            file: None,
            path: FileOutput::path_for(dir, TABLE),
            max: usize::MAX,
            calls,
            foreign: Some(foreign.as_bytes().to_vec()),
            cut_to: None,
            then_fail: false,
        }
    }
}

impl Fault for Interfere {
    fn on(mut self: Box<Self>, file: &File) -> Box<dyn Write + '_> {
        self.file = Some(file.try_clone().expect("a second handle"));
        self
    }
}

impl Interfere {
    /// The other process's write (once).
    fn append_foreign(&mut self) -> std::io::Result<()> {
        if let Some(foreign) = self.foreign.take() {
            let mut other = OpenOptions::new().append(true).open(&self.path)?;
            if let Some(len) = self.cut_to {
                other.set_len(len)?;
            }
            other.write_all(&foreign)?;
            other.sync_all()?;
        }
        Ok(())
    }
}

impl Write for Interfere {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_vectored(&[std::io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        if self.calls == 0 {
            self.append_foreign()?;
            if self.then_fail {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
        }
        let file = self.file.as_ref().expect("set when the batch starts");
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.max - n);
            n += (&*file).write(&b[..take])?;
            if n == self.max || take < b.len() {
                break;
            }
        }
        self.calls = self.calls.saturating_sub(1);
        if self.calls == 0 {
            self.append_foreign()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

/// Resumes `out` from `len` bytes of the table's file it has at its path (the position it
/// commits), returning the length it resumed at.
async fn resume_at(out: &mut FileOutput, len: u64) -> u64 {
    out.entry(TABLE).unwrap();
    let at = out.position(TABLE, len);
    out.resume(TABLE, Some(at)).await.unwrap().unwrap().length
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_failing_midway_leaves_nothing_and_the_retry_confirms_the_exact_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 50), events("b", 80));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap().length;
    assert_eq!(len_a, lines(&a).len() as u64);

    // The disk fills in the middle of a line of the second batch.
    inject(&mut out, DiskFullAfter(1_000));
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert_eq!(
        contents(dir.path()),
        lines(&a),
        "the failed write left bytes behind"
    );

    // The retry writes the batch whole, and the confirmed length is the file's.
    let len_b = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
    let want = lines(&a) + &lines(&b);
    assert_eq!(contents(dir.path()), want);
    assert_eq!(len_b, want.len() as u64);

    // A resume from that confirmed length cuts nothing.
    let mut restarted = output(dir.path());
    assert_eq!(resume_at(&mut restarted, len_b).await, len_b);
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
    let entry = out.files.get_mut(TABLE).unwrap();
    entry.file = None;
    entry.own_end = entry.len + br#"{"id":"partial"#.len() as u64; // the failed write's bytes

    let len = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
    let want = lines(&a) + &lines(&b);
    assert_eq!(contents(dir.path()), want);
    assert_eq!(len, want.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_cuts_to_the_committed_length_even_with_a_broken_handle() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 5), events("b", 7));
    let committed = out.deliver(TABLE, &a).await.unwrap().unwrap().length;
    out.deliver(TABLE, &b).await.unwrap(); // confirmed by this output, never checkpointed
    out.files.get_mut(TABLE).unwrap().file = None;
    assert_eq!(resume_at(&mut out, committed).await, committed);
    assert_eq!(contents(dir.path()), lines(&a));
    let len = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
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
        let mut written = 0;
        write_lines(&mut w, &batch, &mut written, |_| Ok(())).unwrap_or_else(|_| panic!());
        assert_eq!(written, want.len() as u64, "max {max}");
        assert_eq!(String::from_utf8(w.out).unwrap(), want, "max {max}");
        if max == usize::MAX {
            assert_eq!(w.calls, 3, "one call per chunk of 512 events");
        }
    }
}

/// Asserts the file's contents, printing where they differ (the files are long).
fn assert_contents(dir: &Path, want: &str) {
    let found = contents(dir);
    if found != want {
        let at = found
            .bytes()
            .zip(want.bytes())
            .take_while(|(f, w)| f == w)
            .count();
        panic!(
            "the file is {} bytes, want {}; from byte {at}: {:?} instead of {:?}",
            found.len(),
            want.len(),
            &found[at..(at + 80).min(found.len())],
            &want[at..(at + 80).min(want.len())]
        );
    }
}

/// Asserts that `err` is the "another process appended" error naming the file.
fn assert_foreign(err: &OutputError, dir: &Path) {
    let msg = err.to_string();
    let path = FileOutput::path_for(dir, TABLE);
    let want = format!(
        "another process appended to {} while this one wrote; not cutting anything; if two collectors share this directory check that they use the same Redis persistence",
        path.display()
    );
    assert!(msg.contains(&want), "{msg}");
}

/// A former holder woken between two `writev` calls of a big batch, after another replica
/// appended: it writes nothing more and cuts nothing (neither the other's bytes nor the lines
/// before them); the next batch fails the same way until a resume to the committed length
/// (the holder's cut) removes everything past it; then the batch is written whole.
#[tokio::test(flavor = "multi_thread")]
async fn another_process_appending_between_two_writes_is_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b, other) = (events("a", 5), events("b", 1_300), events("B", 3));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap().length;

    inject(&mut out, Interfere::new(dir.path(), 1, &lines(&other)));
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert_foreign(&err, dir.path());
    // One writev (512 events), the other's lines, nothing after them, nothing cut.
    let found = lines(&a) + &lines(&b[..512]) + &lines(&other);
    assert_contents(dir.path(), &found);

    // A healthy handle does not append after another process's bytes either.
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert_foreign(&err, dir.path());
    assert_contents(dir.path(), &found);

    assert_eq!(resume_at(&mut out, len_a).await, len_a);
    assert_contents(dir.path(), &(lines(&a)));
    let len = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
    let want = lines(&a) + &lines(&b);
    assert_contents(dir.path(), &want);
    assert_eq!(len, want.len() as u64);
}

/// A write that fails (a full disk) after another process appended: the file is longer than
/// this output's own bytes, so it cuts nothing and says why, instead of the disk error.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_after_another_process_appended_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b, other) = (events("a", 5), events("b", 20), events("B", 2));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap().length;

    // Short writes of 100 bytes: one lands, the other process appends, the next call fails.
    let mut w = Interfere::new(dir.path(), 1, &lines(&other));
    (w.max, w.then_fail) = (100, true);
    inject(&mut out, w);
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert_foreign(&err, dir.path());
    let b_lines = lines(&b);
    let found = lines(&a) + &b_lines[..100] + &lines(&other);
    assert_contents(dir.path(), &found);

    // The holder's cut, then the batch whole.
    assert_eq!(resume_at(&mut out, len_a).await, len_a);
    out.deliver(TABLE, &b).await.unwrap();
    assert_contents(dir.path(), &(lines(&a) + &b_lines));
}

/// Another process appends between the length check and the write (the write lands after
/// its bytes): the check after the write finds the file longer than this output's bytes make
/// it and cuts nothing.
#[tokio::test(flavor = "multi_thread")]
async fn another_process_appending_between_the_check_and_the_write_is_never_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b, other) = (events("a", 5), events("b", 20), events("B", 2));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap().length;

    inject(&mut out, Interfere::new(dir.path(), 0, &lines(&other)));
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert_foreign(&err, dir.path());
    assert_contents(dir.path(), &(lines(&a) + &lines(&other) + &lines(&b)));
    assert_eq!(resume_at(&mut out, len_a).await, len_a);
    assert_contents(dir.path(), &(lines(&a)));
}

/// Bytes another process appended since this output's last confirmed write (the new holder
/// finding a former holder's batch after its own lines): the batch is not written after them,
/// nothing is cut; the resume to the committed length removes them and the batch follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_not_appended_after_bytes_another_process_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b, stale) = (events("a", 5), events("b", 7), events("b", 3));
    let len_a = out.deliver(TABLE, &a).await.unwrap().unwrap().length;
    let path = FileOutput::path_for(dir.path(), TABLE);
    let mut other = OpenOptions::new().append(true).open(&path).unwrap();
    other.write_all(lines(&stale).as_bytes()).unwrap();
    other.write_all(br#"{"id":"partial"#).unwrap();

    let err = out.deliver(TABLE, &b).await.unwrap_err();
    assert_foreign(&err, dir.path());
    let found = lines(&a) + &lines(&stale) + r#"{"id":"partial"#;
    assert_contents(dir.path(), &found);

    assert_eq!(resume_at(&mut out, len_a).await, len_a);
    let len = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
    let want = lines(&a) + &lines(&b);
    assert_contents(dir.path(), &want);
    assert_eq!(len, want.len() as u64);
}

/// A file truncated (or rotated by copytruncate) between two batches is appended to, and the
/// confirmed length is the new file's.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_truncated_between_batches_is_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    let (a, b) = (events("a", 5), events("b", 7));
    out.deliver(TABLE, &a).await.unwrap();
    let path = FileOutput::path_for(dir.path(), TABLE);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let len = out.deliver(TABLE, &b).await.unwrap().unwrap().length;
    assert_contents(dir.path(), &(lines(&b)));
    assert_eq!(len, lines(&b).len() as u64);
}

/// A new holder's resume cut the file (to its committed length, before this batch's start)
/// and appended its lines while this output was between two `writev` calls: the file is
/// shorter than this output's writes make it, so it stops and cuts nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_cut_and_appended_to_by_another_process_during_a_batch_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = output(dir.path());
    // Its lines end past this batch's start (5 lines) and before this output's bytes' end.
    let (a, b, other) = (events("a", 5), events("b", 1_300), events("B", 4));
    out.deliver(TABLE, &a).await.unwrap();
    let committed = lines(&a[..2]).len() as u64;
    let mut w = Interfere::new(dir.path(), 1, &lines(&other));
    w.cut_to = Some(committed);
    inject(&mut out, w);
    let err = out.deliver(TABLE, &b).await.unwrap_err();
    let msg = err.to_string();
    let want = format!(
        "another process cut {} while this one wrote; not cutting anything",
        FileOutput::path_for(dir.path(), TABLE).display()
    );
    assert!(msg.contains(&want), "{msg}");
    assert_contents(dir.path(), &(lines(&a[..2]) + &lines(&other)));
}

/// A position committed for the file of another directory (A, then B) is not applied to B,
/// and B's own position is not applied to A when the output goes back: each file keeps every
/// line. Then a file rotated away and replaced at the same path: the old file's position is
/// not applied to the new one either.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_of_another_file_is_never_applied() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b, c) = (events("a", 50), events("b", 3), events("c", 4));
    let at_a = output(dir_a.path())
        .deliver(TABLE, &a)
        .await
        .unwrap()
        .unwrap();
    let mut to_b = output(dir_b.path());
    let resumed = to_b
        .resume(TABLE, Some(at_a.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.length, 0, "B is a new file: its own position");
    assert_ne!(resumed.file, at_a.file);
    let at_b = to_b.deliver(TABLE, &b).await.unwrap().unwrap();
    assert_eq!(at_b.length, lines(&b).len() as u64);

    let mut back_to_a = output(dir_a.path());
    let resumed = back_to_a.resume(TABLE, Some(at_b)).await.unwrap().unwrap();
    assert_eq!(resumed, at_a, "A as it is, with its own identity");
    back_to_a.deliver(TABLE, &c).await.unwrap();
    assert_eq!(contents(dir_a.path()), lines(&a) + &lines(&c));
    assert_eq!(contents(dir_b.path()), lines(&b));

    // Rotated: the file moves away, a longer one takes its path.
    let at_rotated = output(dir_b.path())
        .deliver(TABLE, &c)
        .await
        .unwrap()
        .unwrap();
    let path = FileOutput::path_for(dir_b.path(), TABLE);
    std::fs::rename(&path, dir_b.path().join("rotated")).unwrap();
    std::fs::write(&path, lines(&a)).unwrap();
    let mut after = output(dir_b.path());
    let resumed = after
        .resume(TABLE, Some(at_rotated))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.length, lines(&a).len() as u64);
    assert_eq!(contents(dir_b.path()), lines(&a));
}

/// A position from a state before identities (a bare length) is applied to the file at the
/// path where it ends a line, and ignored where it would cut inside one.
#[tokio::test(flavor = "multi_thread")]
async fn a_position_without_a_file_is_applied_only_at_a_line_end() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (events("a", 5), events("b", 7));
    let mut out = output(dir.path());
    let committed = out.deliver(TABLE, &a).await.unwrap().unwrap().length;
    out.deliver(TABLE, &b).await.unwrap();
    let inside_a_line = Position::of_length(committed - 3);
    let kept = output(dir.path())
        .resume(TABLE, Some(inside_a_line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.length, (lines(&a) + &lines(&b)).len() as u64);
    assert_eq!(contents(dir.path()), lines(&a) + &lines(&b));
    let mut restarted = output(dir.path());
    let at = restarted
        .resume(TABLE, Some(Position::of_length(committed)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.length, committed);
    assert!(at.file.is_some(), "the identity is filled in");
    assert_eq!(contents(dir.path()), lines(&a));
}

/// No committed position and a file ending in a partial line: the line is cut back to the
/// last newline before anything is appended, and a file of complete lines is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_position_a_partial_last_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = FileOutput::path_for(dir.path(), TABLE);
    let (a, b) = (events("a", 3), events("b", 2));
    std::fs::write(&path, lines(&a) + r#"{"id":"cut sh"#).unwrap();
    let mut out = output(dir.path());
    let at = out.resume(TABLE, None).await.unwrap().unwrap();
    assert_eq!(at.length, lines(&a).len() as u64);
    out.deliver(TABLE, &b).await.unwrap();
    assert_eq!(contents(dir.path()), lines(&a) + &lines(&b));
    // No newline at all: the whole file is one partial record.
    std::fs::write(&path, r#"{"id":"#).unwrap();
    let at = output(dir.path())
        .resume(TABLE, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((at.length, contents(dir.path())), (0, String::new()));
    // Complete lines: nothing is cut.
    std::fs::write(&path, lines(&a)).unwrap();
    let at = output(dir.path())
        .resume(TABLE, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.length, lines(&a).len() as u64);
}

#[test]
fn the_last_newline_is_found_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut text = "x".repeat(10).to_string() + "\n";
    text.push_str(&"y".repeat(200_000));
    std::fs::write(&path, &text).unwrap();
    let file = File::open(&path).unwrap();
    assert_eq!(complete_lines_length(&file, text.len() as u64).unwrap(), 11);
    assert!(ends_a_line(&file, 11).unwrap());
    assert!(!ends_a_line(&file, 12).unwrap());
    assert!(ends_a_line(&file, text.len() as u64).unwrap());
}

/// The same path and inode are the same file, whatever device number this host gives a shared
/// (network) filesystem; another inode or another path is another file.
#[test]
fn a_file_is_its_path_and_inode() {
    let at = |path: &str, device, inode| FileIdentity {
        path: path.into(),
        device,
        inode,
    };
    let file = at("/srv/out/t.jsonl", 2049, 77);
    assert!(file.is_same_file(&at("/srv/out/t.jsonl", 51, 77)));
    assert!(!file.is_same_file(&at("/srv/out/t.jsonl", 2049, 78)));
    assert!(!file.is_same_file(&at("/srv/out/10001/t.jsonl", 2049, 77)));
}
