//! A `podswitchd` that a benchmark starts in a namespace, with a directory of its own
//! (config, state, socket, log: the config's topology, never a saved one), stopped
//! with SIGTERM when dropped.

use anyhow::{bail, Result};
use control::netns::NetNs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running daemon.
pub struct Podswitchd {
    child: Child,
    dir: PathBuf,
    stopped: bool,
}

impl Podswitchd {
    /// Starts it in `ns` with `config` (TOML without `state_dir` and `control_socket`,
    /// which are added) and waits until its control socket answers.
    pub fn start(ns: &NetNs, tag: &str, config: &str) -> Result<Podswitchd> {
        let dir = std::env::temp_dir().join(format!("psb-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("podswitchd.toml");
        let socket = dir.join("podswitchd.sock");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\ncontrol_socket = \"{}\"\n{config}",
                dir.join("state").display(),
                socket.display()
            ),
        )?;
        let log = dir.join("podswitchd.log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(crate::sibling_bin("podswitchd")?)
            .arg("--config")
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("podswitchd did not start:\n{}", std::fs::read_to_string(&log)?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Podswitchd { child, dir, stopped: false })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("podswitchd.sock")
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("podswitchd.log")).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if !self.stopped {
            self.stopped = true;
            // SAFETY: kill on our own child's pid, which it keeps until waited for.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM)
            };
            self.child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Podswitchd {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
