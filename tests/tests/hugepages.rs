//! The UMEM's hugepage policies against the real kernel. One test, so that nothing else
//! in this binary competes for the pages it reserves.

use podswitch_tests::{root_or_skip, worker_core, Node};

/// Adds pages to vm.nr_hugepages and, on drop, subtracts exactly what it added.
struct Hugepages {
    added: u64,
}

fn nr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse().unwrap()
}

fn free() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines().find_map(|l| l.strip_prefix("HugePages_Free:")).unwrap().trim().parse().unwrap()
}

impl Hugepages {
    fn add(n: u64) -> Hugepages {
        let before = nr();
        std::fs::write("/proc/sys/vm/nr_hugepages", (before + n).to_string()).unwrap();
        Hugepages { added: nr().saturating_sub(before) }
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let now = nr();
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", now.saturating_sub(self.added).to_string());
    }
}

/// One worker with 512 frames of its own (one page) and two ports, each with a segment
/// of 3 x 64 + 64 frames of 4 KiB (1 MiB, one page): three pages in all.
fn config(policy: &str) -> String {
    format!(
        "[dataplane]\ncores = [{}]\nidle = \"backoff\"\nring_size = 64\nhugepages = \"{policy}\"\numem_frames = 512\n\
         [[networks]]\nname = \"n\"\n[[ports]]\nname = \"pod0\"\nnetwork = \"n\"\n[[ports]]\nname = \"pod1\"\nnetwork = \"n\"\n",
        worker_core()
    )
}

const PAGES: u64 = 3;

#[test]
fn require_refuses_without_pages_and_runs_on_them_when_there() {
    if !root_or_skip() {
        return;
    }
    let mut node = Node::new("ps-huge").unwrap();
    let p0 = node.pod("pod0", Some("198.18.2.1"), None, 1500, 1).unwrap();
    let _p1 = node.pod("pod1", Some("198.18.2.2"), None, 1500, 1).unwrap();

    if free() < PAGES {
        let err = node.start(&config("require")).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("hugepages"), "{err}");
    }

    let guard = Hugepages::add(PAGES);
    assert_eq!(guard.added, PAGES, "the kernel could not reserve {PAGES} hugepages");
    let before = free();
    node.start(&config("require")).unwrap();
    assert_eq!(before - free(), PAGES, "the worker's own segment and each port's are on hugepages");
    let m = node.metrics().unwrap();
    assert_eq!(m.sum("podswitch_worker_umem_hugepages", &[]), 1);
    assert!(p0.ping("198.18.2.2", 3).unwrap(), "forwarding from hugepage-backed frames");
    let (status, _) = node.stop().unwrap();
    assert!(status.success());

    // auto takes the pages when they are free...
    node.start(&config("auto")).unwrap();
    assert_eq!(node.metrics().unwrap().sum("podswitch_worker_umem_hugepages", &[]), 1);
    node.stop().unwrap();
    drop(guard);
    // ...and falls back to normal pages, with a warning, when they are not.
    if free() < PAGES {
        node.start(&config("auto")).unwrap();
        assert_eq!(node.metrics().unwrap().sum("podswitch_worker_umem_hugepages", &[]), 0);
        assert!(node.log_text().contains("hugepages.conf"), "the warning names hugepages.conf");
        assert!(p0.ping("198.18.2.2", 2).unwrap());
    }
}
