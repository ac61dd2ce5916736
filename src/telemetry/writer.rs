//! Where log lines go: standard error, through a batching writer off the
//! request path. A line is made straight into a buffer of its thread's own
//! (one of a few shards, each behind its own lock, so threads never wait
//! for each other while a line is made), with no system call; one thread,
//! woken by the first line of a batch, writes what gathers in all shards in
//! the next 2 ms in one `write(2)`, so a burst of lines is one write and one
//! wake-up, and a slow reader of stderr (a full pipe, a stalled journald)
//! never blocks a request. A thread's lines keep their order; lines of
//! different threads within one batch are written shard by shard. Past
//! [`MAX_PENDING`] bytes waiting, a line is dropped and counted
//! ([`dropped_lines`], the metric `sfmc_proxy_log_lines_dropped_total`),
//! and so are the lines of a batch whose write fails.
//!
//! [`finish`] writes out every line still waiting before the process exits
//! (after a graceful shutdown, an error, a short command); lines logged after
//! it are written at once, on the caller's thread, so none is lost.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;

/// Bytes of lines that may wait for the writer (some 10,000 access lines),
/// shared out among the shards: beyond its share a shard has fallen behind,
/// and a new line is dropped rather than held in memory without bound or
/// made to wait.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// How long the writer thread gathers lines after the first of a batch:
/// a line is on stderr at most this much later.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// What a batch buffer keeps of its capacity once written: a burst must
/// not pin megabytes for the rest of the process's life.
const KEPT_CAPACITY: usize = 64 * 1024;

/// Shards at most: one per CPU, as the runtime has worker threads.
const MAX_SHARDS: usize = 64;

type Output = Box<dyn Write + Send>;

/// The batching writer: lines in, batches out on its own thread.
pub struct Batching {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<(Output, bool)>>>,
}

struct Shared {
    /// Lines waiting for the writer thread, a buffer per shard.
    shards: Box<[Mutex<Vec<u8>>]>,
    /// Bytes a shard may hold.
    shard_limit: usize,
    /// Set by the first line since the writer thread last took the shards:
    /// that line wakes it.
    pending: AtomicBool,
    /// Set (under `state`, with `direct`) once the thread has ended.
    finished: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Set by [`Batching::finish`]: the thread writes what waits and ends.
    closing: bool,
    /// The output once the thread has ended: lines go straight to it.
    direct: Option<Output>,
}

/// A panic while holding a lock leaves bytes, never a broken invariant:
/// carry on with them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The calling thread's shard: threads take shards in turn, once.
    fn shard(&self) -> &Mutex<Vec<u8>> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let index = SHARD.with(|shard| *shard) % self.shards.len();
        &self.shards[index]
    }

    /// Moves every shard's lines to the end of `batch`.
    fn take_all(&self, batch: &mut Vec<u8>) {
        for shard in &self.shards {
            let mut lines = lock(shard);
            batch.extend_from_slice(&lines);
            lines.clear();
            lines.shrink_to(KEPT_CAPACITY);
        }
    }
}

impl Batching {
    /// Starts the writer thread on `out`; at most `max_pending` bytes wait,
    /// shared among as many shards as the machine has CPUs.
    pub fn start(out: impl Write + Send + 'static, max_pending: usize) -> std::io::Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_shards(out, max_pending, cpus.min(MAX_SHARDS))
    }

    fn with_shards(
        out: impl Write + Send + 'static,
        max_pending: usize,
        shards: usize,
    ) -> std::io::Result<Self> {
        let shards = shards.max(1);
        let shared = Arc::new(Shared {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_limit: max_pending / shards,
            pending: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
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
        self.write_with(|pending| pending.extend_from_slice(line));
    }

    /// Queues the whole line(s) `encode` appends to the buffer it is given:
    /// made straight into the calling thread's shard, under its lock.
    /// `encode` must not log (it would wait for itself).
    pub fn write_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let shared = &*self.shared;
        let mut lines = lock(shared.shard());
        // Read under the shard's lock: `finish` sets it before it empties
        // the shards, each under its lock, so a line is either in a shard
        // it empties or written directly after them.
        if shared.finished.load(Ordering::Acquire) {
            drop(lines);
            let mut line = Vec::new();
            encode(&mut line);
            if let Some(out) = &mut lock(&shared.state).direct {
                let _ = out.write_all(&line).and_then(|()| out.flush());
            }
            return;
        }
        let start = lines.len();
        if start >= shared.shard_limit {
            // Fallen behind: nothing is made to be thrown away.
            drop(lines);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut made = Made {
            lines: &mut lines,
            start,
            whole: false,
        };
        encode(made.lines);
        made.whole = made.lines.len() <= shared.shard_limit;
        let kept = made.whole;
        drop(made);
        drop(lines);
        if !kept {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only the first line of a batch wakes the thread (a load first:
        // the flag's cache line is then shared, not written, by the others).
        if !shared.pending.load(Ordering::Relaxed) && !shared.pending.swap(true, Ordering::AcqRel) {
            // Under the lock the thread checks the flag in before it waits:
            // the wake-up cannot fall between its check and its wait.
            let _state = lock(&shared.state);
            shared.wake.notify_one();
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
        let mut worker = lock(&self.worker);
        let Some(worker) = worker.take() else {
            return;
        };
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_one();
        let (mut out, mut broken) = match worker.join() {
            Ok(ended) => ended,
            // The thread panicked (it does not): its output is gone, stderr
            // itself is the best left.
            Err(_) => (Box::new(std::io::stderr()) as Output, false),
        };
        let mut state = lock(&self.shared.state);
        self.shared.finished.store(true, Ordering::Release);
        // What came in after the thread took its last batch.
        let mut rest = Vec::new();
        self.shared.take_all(&mut rest);
        write_batch(&mut out, &rest, &self.shared, &mut broken);
        state.direct = Some(out);
    }
}

/// A line being made in a shard: cut back off again unless it is whole and
/// fits (a panicking `encode` leaves no half line for the next to follow).
struct Made<'a> {
    lines: &'a mut Vec<u8>,
    start: usize,
    whole: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if !self.whole {
            self.lines.truncate(self.start);
        }
    }
}

/// The writer thread: waits for lines, writes all there are, until closed.
fn write_batches(shared: &Shared, mut out: Output) -> (Output, bool) {
    let mut batch = Vec::new();
    // A write that failed part-way may have left half a line out.
    let mut broken = false;
    loop {
        let closing = {
            let mut state = lock(&shared.state);
            while !shared.pending.load(Ordering::Acquire) && !state.closing {
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
        // Cleared before the shards are taken: a line added after its
        // shard was taken finds the flag down and wakes the thread again.
        shared.pending.store(false, Ordering::Release);
        shared.take_all(&mut batch);
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
    // An empty batch (a wake-up whose line went in the batch before) has
    // nothing to write, unless a line is still to be ended.
    if batch.is_empty() && !*broken {
        return;
    }
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
        // One shard: the 30 bytes are all its own.
        let logs = Batching::with_shards(out, 30, 1).expect("thread");
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
    fn lines_of_many_threads_are_all_written_each_thread_s_in_order() {
        let captured = Captured::default();
        let out = Gated {
            captured: captured.clone(),
            gate: None,
        };
        let logs = Arc::new(Batching::with_shards(out, MAX_PENDING, 3).expect("thread"));
        let threads: Vec<_> = (0..5)
            .map(|t| {
                let logs = logs.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        logs.write_with(|batch| {
                            let _ = writeln!(batch, "thread {t} line {i}");
                        });
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("writer thread");
        }
        logs.finish();
        logs.write_line(b"after\n");
        let text = captured.text();
        let mut next = [0usize; 5];
        for line in text.lines().take(10_000) {
            let fields: Vec<&str> = line.split(' ').collect();
            let [_, t, _, i] = fields[..] else {
                panic!("a torn line: {line:?}");
            };
            let (t, i): (usize, usize) = (t.parse().expect("t"), i.parse().expect("i"));
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [2000; 5], "every line written once");
        assert!(
            text.ends_with("\nafter\n"),
            "the line after finish comes last"
        );
        assert_eq!(logs.dropped_lines(), 0);
    }

    #[test]
    fn a_full_shard_drops_the_line_it_would_have_made_and_keeps_the_rest_whole() {
        let captured = Captured::default();
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let out = Gated {
            captured: captured.clone(),
            gate: Some((entered_tx, go_rx)),
        };
        let logs = Batching::with_shards(out, 20, 1).expect("thread");
        logs.write_line(b"first\n");
        entered.recv().expect("the thread writes");
        // 12 bytes fit; the next 12 would pass 20: cut back, not torn.
        logs.write_with(|batch| batch.extend_from_slice(b"twelve bytes"));
        logs.write_with(|batch| batch.extend_from_slice(b"\nmore bytes\n"));
        let mut asked = false;
        logs.write_with(|batch| {
            asked = true;
            batch.extend_from_slice(b"x\n");
        });
        assert_eq!(logs.dropped_lines(), 1, "the second write did not fit");
        assert!(asked, "under the limit a line is still made");
        go.send(()).expect("let go");
        logs.finish();
        assert_eq!(captured.text(), "first\ntwelve bytesx\n");
    }

    #[test]
    fn a_line_whose_making_panics_leaves_nothing_behind() {
        let captured = Captured::default();
        let out = Gated {
            captured: captured.clone(),
            gate: None,
        };
        let logs = Batching::with_shards(out, MAX_PENDING, 1).expect("thread");
        logs.write_line(b"before\n");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            logs.write_with(|batch| {
                batch.extend_from_slice(b"half a li");
                panic!("a bug while making the line");
            });
        }));
        assert!(panicked.is_err());
        logs.write_line(b"after\n");
        logs.finish();
        assert_eq!(captured.text(), "before\nafter\n");
    }
}
