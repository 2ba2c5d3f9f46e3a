//! Child processes that cannot outlive the test binary.
//!
//! Each child gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with its parent even on SIGKILL.
//! Because the signal fires when the *spawning thread* exits, children that must live for the
//! whole binary are spawned from one parked service thread (see [`spawn_long_lived`]). Drop
//! kills a child and waits for it; an `atexit` hook does the same for the shared ones, since
//! Rust does not drop statics at exit.

use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::mpsc;

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Guard {
    child: Option<Child>,
    name: String,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the child has exited already.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on a pid we own and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{} did not stop on SIGTERM; killed", self.name);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn with_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns a child tied to the calling thread's lifetime.
pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Guard> {
    with_parent_death_signal(&mut cmd);
    let child = cmd.spawn()?;
    Ok(Guard {
        child: Some(child),
        name: name.to_string(),
    })
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

static SERVICE: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);

/// Spawns a child from the parked service thread, so it lives as long as the test binary
/// (and no longer).
pub fn spawn_long_lived(name: &str, mut cmd: Command) -> std::io::Result<Guard> {
    with_parent_death_signal(&mut cmd);
    let sender = {
        let mut service = SERVICE.lock().expect("service lock");
        service
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel::<SpawnJob>();
                std::thread::Builder::new()
                    .name("testbed-spawner".into())
                    .spawn(move || {
                        for (mut cmd, reply) in rx {
                            let _ = reply.send(cmd.spawn());
                        }
                        // The sender lives in a static, so this thread parks here forever.
                        loop {
                            std::thread::park();
                        }
                    })
                    .expect("spawn the testbed spawner thread");
                tx
            })
            .clone()
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    let child = reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))??;
    Ok(Guard {
        child: Some(child),
        name: name.to_string(),
    })
}

type ExitHook = Box<dyn FnOnce() + Send>;
static EXIT_HOOKS: Mutex<Vec<ExitHook>> = Mutex::new(Vec::new());

extern "C" fn run_exit_hooks() {
    let hooks = std::mem::take(&mut *EXIT_HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
    // Last registered first: the API server stops before etcd.
    for hook in hooks.into_iter().rev() {
        hook();
    }
}

/// Runs `hook` when the process exits normally (the test harness calls `exit`).
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    let mut hooks = EXIT_HOOKS.lock().expect("exit hooks lock");
    if hooks.is_empty() {
        // SAFETY: registers a plain extern "C" function without captured state.
        unsafe { libc::atexit(run_exit_hooks) };
    }
    hooks.push(Box::new(hook));
}
