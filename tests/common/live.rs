//! Children that a test talks to while they run.
//!
//! [`spawn_child`](super::spawn_child) and [`wait_child`](super::wait_child)
//! cover a child that runs to completion. Multi-process tests also need
//! children that report progress ("ready", a handle, figures), wait for the
//! parent's word ("go", "free this"), or get killed half-way. [`LiveChild`]
//! does that over the child's stdin and stdout:
//!
//! - the child writes *messages*, lines `@@<key> <payload>`, with [`say`];
//!   everything else it prints (the test harness's own lines included) is
//!   kept for failure messages but is not a message;
//! - the parent waits for a message with [`LiveChild::expect`] (bounded by a
//!   timeout) and answers with [`LiveChild::send`]; the child reads the
//!   answer with [`hear`];
//! - a `LiveChild` that is dropped while its process still runs kills it
//!   (SIGKILL) and reaps it, so a failing test leaves no process behind.
//!
//! The harness prints `test <name> ... ` before the test's own output on the
//! same line, so a message is found anywhere in a line, after its `@@`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Marks a message line.
const MARK: &str = "@@";

/// In a child: sends the message `key payload` to the parent.
pub fn say(key: &str, payload: impl std::fmt::Display) {
    let line = format!("{MARK}{key} {payload}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// In a child: waits for the next line the parent sends (without its
/// newline). Panics if the parent closed the pipe.
pub fn hear() -> String {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read from the parent");
    assert!(n > 0, "the parent closed the pipe");
    line.trim_end_matches('\n').to_string()
}

/// In a child: waits for exactly the line `word` from the parent.
pub fn hear_exactly(word: &str) {
    let got = hear();
    assert_eq!(got, word, "unexpected command from the parent");
}

/// A message from a child: its key and the rest of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The word after `@@`.
    pub key: String,
    /// The rest of the line, trimmed.
    pub payload: String,
}

/// A running child process that the parent exchanges messages with.
pub struct LiveChild {
    name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    messages: Receiver<Message>,
    stdout_log: Arc<Mutex<String>>,
    stderr_log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl LiveChild {
    /// Starts the current test binary for the single test `test_name` in
    /// role `role` (see [`child_args`](super::child_args)), with extra
    /// environment variables `env`.
    pub fn spawn(test_name: &str, role: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = super::child_command(test_name, role, args);
        cmd.args(["--include-ignored"]).stdin(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the test binary as a child");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let (tx, messages) = channel();
        let stdout_log = Arc::new(Mutex::new(String::new()));
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let out_log = Arc::clone(&stdout_log);
        let out_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                out_log.lock().unwrap().push_str(&line);
                if let Some(at) = line.find(MARK) {
                    let body = line[at + MARK.len()..].trim();
                    let (key, payload) = body.split_once(' ').unwrap_or((body, ""));
                    let _ = tx.send(Message {
                        key: key.to_string(),
                        payload: payload.trim().to_string(),
                    });
                }
            }
        });
        let err_log = Arc::clone(&stderr_log);
        let err_reader = std::thread::spawn(move || {
            let mut reader = stderr;
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err_log
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        LiveChild {
            name: format!("{role} (pid {})", child.id()),
            child: Some(child),
            status: None,
            stdin,
            messages,
            stdout_log,
            stderr_log,
            readers: vec![out_reader, err_reader],
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// What the child printed so far, and how it ended if it did.
    pub fn transcript(&self) -> String {
        format!(
            "child {}: {}\n--- child stdout ---\n{}\n--- child stderr ---\n{}",
            self.name,
            self.status
                .as_ref()
                .map(super::status_text)
                .unwrap_or_else(|| "running".into()),
            self.stdout_log.lock().unwrap(),
            self.stderr_log.lock().unwrap()
        )
    }

    /// Waits for the next message and checks that its key is `key`;
    /// returns its payload. Panics (killing the child) on another key, on a
    /// timeout, or if the child exits first.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> String {
        match self.next_message(timeout) {
            Some(m) if m.key == key => m.payload,
            Some(m) => {
                self.kill();
                panic!(
                    "expected message {key:?} from the child, got {m:?}\n{}",
                    self.transcript()
                )
            }
            None => {
                self.kill();
                panic!(
                    "no message {key:?} from the child within {timeout:?}\n{}",
                    self.transcript()
                )
            }
        }
    }

    /// The next message, or `None` if the child closed its stdout (exited)
    /// or `timeout` passed.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Message> {
        match self.messages.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                if self.child.is_some() {
                    self.reap_if_exited();
                }
                None
            }
        }
    }

    /// Every message the child sent until it closed its stdout; panics
    /// (killing the child) if that takes longer than `timeout`.
    pub fn messages_until_exit(&mut self, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) => out.push(m),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "the child did not exit within {timeout:?}\n{}",
                        self.transcript()
                    );
                }
            }
        }
    }

    /// Sends one line to the child.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is open");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            self.reap_if_exited();
            panic!(
                "could not send {line:?} to the child: {e}\n{}",
                self.transcript()
            );
        }
    }

    /// Kills the child with SIGKILL and reaps it; returns how it ended
    /// (it may have exited on its own just before).
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child.wait().expect("reap the killed child");
            self.status = Some(status);
            self.join_readers();
        }
        self.status.expect("a reaped child has a status")
    }

    /// Waits for the child to exit on its own; kills it and panics if it has
    /// not after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.child.is_some() {
            self.reap_if_exited();
            if self.child.is_none() {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "the child did not exit within {timeout:?} and was killed\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.status.expect("a reaped child has a status")
    }

    /// Waits for the child to exit and panics, with its transcript, unless
    /// it ran its one test and exited with status 0.
    pub fn wait_success(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(
            status.success() && self.stdout_log.lock().unwrap().contains("running 1 test"),
            "the child failed (or ran no test)\n{}",
            self.transcript()
        );
    }

    /// Waits for the child to die of SIGKILL (it kills itself at a crash
    /// point); panics, with its transcript, if it ends any other way.
    pub fn wait_killed(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child was expected to die of SIGKILL\n{}",
            self.transcript()
        );
    }

    fn reap_if_exited(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.status = Some(status);
            self.child = None;
            self.join_readers();
        }
    }

    fn join_readers(&mut self) {
        self.stdin = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for LiveChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `f` on another thread and returns its result; panics if it takes
/// longer than `timeout` (a deadlock), or with `f`'s own panic.
pub fn run_with_timeout<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => {
            let _ = worker.join();
            v
        }
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {timeout:?}: a deadlock or a hang")
        }
    }
}

/// A directory for segment files: on `/dev/shm` (tmpfs, fast) when it
/// exists, else the default temporary directory. Removed on drop.
pub fn segment_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("shmslab-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("shmslab-test-")
        .tempdir()
        .expect("a temporary directory")
}

/// A fresh [`segment_dir`] holding a new segment named `file`, made with the
/// default settings.
pub fn new_segment(file: &str) -> (tempfile::TempDir, std::path::PathBuf, shmslab::Slab) {
    segment_with(file, shmslab::Slab::builder())
}

/// [`new_segment`] at 64 KiB: small enough that a test's allocations make it
/// grow while others are attached.
pub fn small_segment(file: &str) -> (tempfile::TempDir, std::path::PathBuf, shmslab::Slab) {
    segment_with(file, shmslab::Slab::builder().initial_size(64 << 10))
}

/// [`new_segment`] made by `builder`.
pub fn segment_with(
    file: &str,
    builder: shmslab::SlabBuilder,
) -> (tempfile::TempDir, std::path::PathBuf, shmslab::Slab) {
    let dir = segment_dir();
    let path = dir.path().join(file);
    let slab = builder.create(&path).expect("create");
    (dir, path, slab)
}

/// A 16-byte handle as 32 hex digits, for a message line.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of [`to_hex`]'s output.
pub fn from_hex<const N: usize>(s: &str) -> [u8; N] {
    let s = s.trim();
    assert_eq!(s.len(), 2 * N, "expected {N} hex bytes, got {s:?}");
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digits");
    }
    out
}

/// A small xorshift64* generator: deterministic per seed, no dependencies.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A barrier for processes: a counter in a small shared file that each
/// party bumps and then spins on, so that the parties leave each round
/// within a fraction of a microsecond of each other (a pipe message takes a
/// scheduler wake-up, far too slow to make two processes race).
pub struct SpinBarrier {
    map: memmap2::MmapMut,
    parties: u64,
    rounds: std::cell::Cell<u64>,
}

impl SpinBarrier {
    /// Creates the barrier's file (zeroed) at `path`.
    pub fn create(path: &std::path::Path) {
        std::fs::write(path, [0u8; 64]).expect("create the barrier file");
    }

    /// Opens the barrier at `path` for `parties` processes.
    pub fn open(path: &std::path::Path, parties: u64) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the barrier file");
        // SAFETY: the file is a private test file of 64 bytes that only
        // `SpinBarrier`s map, and they touch it only through the atomic word
        // at offset 0.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map the barrier file");
        SpinBarrier {
            map,
            parties,
            rounds: std::cell::Cell::new(0),
        }
    }

    fn word(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the mapping is page aligned, at least 8 bytes long, and
        // lives as long as `self`; other processes only use it atomically.
        unsafe { &*(self.map.as_ptr() as *const std::sync::atomic::AtomicU64) }
    }

    /// Waits until every party has called `wait` as many times as this one.
    /// Panics after 60 s (a party died or never came).
    pub fn wait(&self) {
        use std::sync::atomic::Ordering;
        let round = self.rounds.get() + 1;
        self.rounds.set(round);
        self.word().fetch_add(1, Ordering::AcqRel);
        let target = round * self.parties;
        let started = Instant::now();
        let mut spins = 0u64;
        while self.word().load(Ordering::Acquire) < target {
            spins += 1;
            if spins % 1024 == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "barrier round {round}: the other parties did not arrive"
                );
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A small file of 64-bit words mapped by several processes, used only
/// through atomics: rings and flags for tests that pass data between
/// children faster than pipes allow.
pub struct SharedWords {
    map: memmap2::MmapMut,
}

impl SharedWords {
    /// Creates the file at `path` with `words` zero words.
    pub fn create(path: &std::path::Path, words: usize) {
        std::fs::write(path, vec![0u8; words * 8]).expect("create the shared words file");
    }

    /// Maps the file at `path`.
    pub fn open(path: &std::path::Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the shared words file");
        // SAFETY: a private test file that is only ever accessed through the
        // atomic words `word` hands out.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map the shared words");
        SharedWords { map }
    }

    /// The `i`-th word.
    pub fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!((i + 1) * 8 <= self.map.len(), "word {i} is past the file");
        // SAFETY: in bounds (checked above), 8-aligned (the mapping is page
        // aligned), and alive as long as `self`; other processes use the
        // word only atomically.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const std::sync::atomic::AtomicU64) }
    }
}
