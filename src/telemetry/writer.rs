//! Where log lines go: standard error, through a batching writer off the
//! request path. A line is copied into a shared buffer (one short lock, no
//! system call); one thread, woken by the first line, writes what gathers
//! in the next 2 ms in one `write(2)`, so a burst of lines is one write and
//! one wake-up, and a slow reader of stderr
//! (a full pipe, a stalled journald) never blocks a request. Past
//! [`MAX_PENDING`] bytes waiting, a line is dropped and counted
//! ([`dropped_lines`], the metric `sfmc_proxy_log_lines_dropped_total`),
//! and so are the lines of a batch whose write fails.
//!
//! [`finish`] writes out every line still waiting before the process exits
//! (after a graceful shutdown, an error, a short command); lines logged after
//! it are written at once, on the caller's thread, so none is lost.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;

/// Bytes of lines that may wait for the writer (some 10,000 access lines):
/// beyond this it has fallen behind, and a new line is dropped rather than
/// held in memory without bound or made to wait.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// How long the writer thread gathers lines after the first of a batch:
/// a line is on stderr at most this much later.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// What a batch buffer keeps of its capacity once written: a burst must
/// not pin megabytes for the rest of the process's life.
const KEPT_CAPACITY: usize = 64 * 1024;

type Output = Box<dyn Write + Send>;

/// The batching writer: lines in, batches out on its own thread.
pub struct Batching {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<(Output, bool)>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
    max_pending: usize,
}

#[derive(Default)]
struct State {
    /// Lines waiting for the writer thread.
    pending: Vec<u8>,
    /// Set by [`Batching::finish`]: the thread writes what waits and ends.
    closing: bool,
    /// The output once the thread has ended: lines go straight to it.
    direct: Option<Output>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves bytes, never a broken
        // invariant: carry on with them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Batching {
    /// Starts the writer thread on `out`; at most `max_pending` bytes wait.
    pub fn start(out: impl Write + Send + 'static, max_pending: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            max_pending,
        });
        let out: Output = Box::new(out);
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sfmc-proxy-log".into())
                .spawn(move || write_batches(&shared, out))?
        };
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Queues one whole line (or several: what is given is kept together).
    pub fn write_line(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        if let Some(out) = &mut state.direct {
            let _ = out.write_all(line).and_then(|()| out.flush());
            return;
        }
        if state.pending.len() + line.len() > self.shared.max_pending {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only the first line of a batch wakes the thread: the others find
        // it awake (writing the previous batch, or about to take this one).
        let wake = state.pending.is_empty();
        state.pending.extend_from_slice(line);
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Lines dropped because too much was waiting.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes out every line waiting and ends the thread; from then on lines
    /// are written as they come. Waits for the output as long as it takes
    /// (a line is not lost to a slow reader at exit). Safe to call twice.
    pub fn finish(&self) {
        // Held to the end: a second caller returns only once the lines are
        // out (then finding nothing left to do).
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(worker) = worker.take() else {
            return;
        };
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let Ok((mut out, mut broken)) = worker.join() else {
            // The thread panicked (it does not): its output is gone, stderr
            // itself is the best left.
            self.shared.lock().direct = Some(Box::new(std::io::stderr()));
            return;
        };
        let mut state = self.shared.lock();
        // What came in after the thread took its last batch.
        write_batch(&mut out, &state.pending, &self.shared, &mut broken);
        state.pending = Vec::new();
        state.direct = Some(out);
    }
}

/// The writer thread: waits for lines, writes all there are, until closed.
fn write_batches(shared: &Shared, mut out: Output) -> (Output, bool) {
    let mut batch = Vec::new();
    // A write that failed part-way may have left half a line out.
    let mut broken = false;
    loop {
        let closing = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closing {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.closing
        };
        if !closing {
            // Let the lines of the next few milliseconds join this batch:
            // one write and one wake-up for all of them.
            std::thread::sleep(BATCH_WINDOW);
        }
        let closing = {
            let mut state = shared.lock();
            std::mem::swap(&mut state.pending, &mut batch);
            state.closing
        };
        write_batch(&mut out, &batch, shared, &mut broken);
        batch.clear();
        batch.shrink_to(KEPT_CAPACITY);
        if closing {
            return (out, broken);
        }
    }
}

/// Writes `batch` to `out`. A write that fails (stderr closed, a full disk)
/// loses the batch: its lines are counted as dropped, and the next batch
/// starts on a line of its own, not glued to half of one.
fn write_batch(out: &mut Output, batch: &[u8], shared: &Shared, broken: &mut bool) {
    let repaired = match *broken {
        true => out.write_all(b"\n"),
        false => Ok(()),
    };
    let written = repaired.and_then(|()| out.write_all(batch).and_then(|()| out.flush()));
    *broken = written.is_err();
    if written.is_err() {
        let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
        shared.dropped.fetch_add(lines, Ordering::Relaxed);
    }
}

/// The process's log writer, once [`install`]ed.
static LOGS: OnceLock<Batching> = OnceLock::new();

/// Starts the process's writer on stderr (once); `None` when no thread can
/// be started, and then logs are written straight to stderr.
pub fn install() -> Option<&'static Batching> {
    if let Some(logs) = LOGS.get() {
        return Some(logs);
    }
    let logs = Batching::start(std::io::stderr(), MAX_PENDING).ok()?;
    Some(LOGS.get_or_init(|| logs))
}

/// Log lines dropped so far because the writer fell behind.
pub fn dropped_lines() -> u64 {
    LOGS.get().map_or(0, Batching::dropped_lines)
}

/// Writes out every log line waiting: the process is about to exit.
pub fn finish() {
    if let Some(logs) = LOGS.get() {
        logs.finish();
    }
}

/// `tracing_subscriber`'s writer: each event's line to the batching writer.
#[derive(Clone, Copy)]
pub struct Lines(pub &'static Batching);

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output the test reads, which can hold its first write until let go.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    struct Gated {
        captured: Captured,
        /// Taken at the first write: says it has begun, waits to be let go.
        gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some((entered, go)) = self.gate.take() {
                entered.send(()).ok();
                go.recv().ok();
            }
            self.captured
                .0
                .lock()
                .expect("lock")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_finish_and_after_it() {
        let captured = Captured::default();
        let out = Gated {
            captured: captured.clone(),
            gate: None,
        };
        let logs = Batching::start(out, MAX_PENDING).expect("thread");
        for i in 0..1000 {
            logs.write_line(format!("line {i}\n").as_bytes());
        }
        logs.finish();
        logs.write_line(b"after\n");
        logs.finish();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(captured.text(), expected + "after\n");
        assert_eq!(logs.dropped_lines(), 0);
    }

    /// An output whose first write fails after half of it got out.
    struct FailsOnce(Captured, bool);

    impl Write for FailsOnce {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut captured = self.0.0.lock().expect("lock");
            if std::mem::replace(&mut self.1, false) {
                captured.extend_from_slice(&bytes[..bytes.len() / 2]);
                return Err(std::io::Error::other("disk full"));
            }
            captured.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_its_lines_and_the_next_starts_a_line() {
        let captured = Captured::default();
        let logs = Batching::start(FailsOnce(captured.clone(), true), MAX_PENDING).expect("thread");
        logs.write_line(b"abc\nlost two\n");
        // Written by the thread, or by finish: either way after the failure.
        logs.finish();
        logs.write_line(b"next\n");
        assert_eq!(logs.dropped_lines(), 2, "{}", captured.text());
        assert!(captured.text().ends_with("\nnext\n"), "{}", captured.text());
    }

    #[test]
    fn a_writer_that_falls_behind_drops_and_counts_lines() {
        let captured = Captured::default();
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let out = Gated {
            captured: captured.clone(),
            gate: Some((entered_tx, go_rx)),
        };
        let logs = Batching::start(out, 30).expect("thread");
        logs.write_line(b"first\n");
        // The thread holds "first" in a write that does not return yet.
        entered.recv().expect("the thread writes");
        for i in 0..5 {
            logs.write_line(format!("waiting {i}\n").as_bytes()); // 10 bytes
        }
        assert_eq!(logs.dropped_lines(), 2, "30 bytes may wait: 3 lines");
        go.send(()).expect("let go");
        logs.finish();
        assert_eq!(
            captured.text(),
            "first\nwaiting 0\nwaiting 1\nwaiting 2\n",
            "the lines kept are all written"
        );
    }

    #[test]
    fn lines_keep_the_order_they_were_written_in_across_threads() {
        let captured = Captured::default();
        let out = Gated {
            captured: captured.clone(),
            gate: None,
        };
        let logs = Arc::new(Batching::start(out, MAX_PENDING).expect("thread"));
        // Two threads taking turns, each line written after the other's:
        // the log must alternate as they did (one request's lines may come
        // from two worker threads, and lines written one after the other
        // must not come out the other way round within a batch).
        let (to_one, at_one) = mpsc::channel::<()>();
        let (to_zero, at_zero) = mpsc::channel::<()>();
        let one = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    at_one.recv().expect("turn");
                    logs.write_line(format!("one {i}\n").as_bytes());
                    to_zero.send(()).expect("pass");
                }
            })
        };
        for i in 0..200 {
            logs.write_line(format!("zero {i}\n").as_bytes());
            to_one.send(()).expect("pass");
            at_zero.recv().expect("turn");
        }
        one.join().expect("thread");
        logs.finish();
        let expected: String = (0..200).map(|i| format!("zero {i}\none {i}\n")).collect();
        assert_eq!(captured.text(), expected);
    }
}
