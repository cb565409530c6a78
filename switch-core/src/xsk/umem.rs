//! UMEM: the packet memory one worker shares between all its AF_XDP sockets, and the
//! pool of free frames in it.

use crate::sys::Mapping;
use std::io;

/// Where packet data starts in a received frame: the kernel leaves `XDP_PACKET_HEADROOM`
/// (256 bytes) in front of it, which the pipeline uses to push headers (VLAN, VXLAN).
pub const FRAME_HEADROOM: u32 = 256;

const HUGEPAGE_SIZE: usize = 2 << 20;

/// Whether the UMEM is backed by 2 MiB hugepages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugepagePolicy {
    /// Use hugepages when enough are free, otherwise normal pages with one warning.
    #[default]
    Auto,
    /// Refuse to start without hugepages.
    Require,
    /// Normal pages only.
    Off,
}

/// What backs a UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// 2 MiB hugepages.
    Hugepages,
    /// 4 KiB pages.
    NormalPages,
}

/// How a UMEM is sized.
#[derive(Debug, Clone, Copy)]
pub struct UmemConfig {
    /// Number of frames.
    pub frames: u32,
    /// Bytes per frame (chunk): a power of two, 2048 to 4096 in aligned mode.
    pub frame_size: u32,
    /// Hugepage policy.
    pub hugepages: HugepagePolicy,
}

/// A UMEM that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UmemError {
    /// Bad sizing.
    #[error("invalid UMEM configuration: {0}")]
    Config(String),
    /// `require` policy and not enough hugepages.
    #[error(
        "hugepages required but only {free} of the {needed} 2 MiB pages needed are free \
         ({missing} missing): add pages with `sysctl -w vm.nr_hugepages=$(( $(cat /proc/sys/vm/nr_hugepages) + {missing} ))` \
         (hugepages.conf reserves the default configuration's), or set hugepages = \"auto\""
    )]
    HugepagesMissing {
        /// Pages needed.
        needed: usize,
        /// Pages free.
        free: usize,
        /// needed - free.
        missing: usize,
    },
    /// mmap failed.
    #[error("cannot map {bytes} bytes of UMEM ({what}): {source}")]
    Map {
        /// Size asked for.
        bytes: usize,
        /// Which backing.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },
}

/// What `XDP_UMEM_REG` needs to know of a [`Umem`]: plain numbers, so the thread that
/// opens sockets need not own the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemRegion {
    /// Start address in this process.
    pub addr: u64,
    /// Registered bytes (whole frames).
    pub len: u64,
    /// Bytes per frame.
    pub frame_size: u32,
}

/// One worker's packet memory and free-frame pool.
///
/// Thread-safety: owned by exactly one worker thread; the kernel reads and writes frames
/// only while their addresses sit on a ring, which the ownership rules in the module
/// docs keep disjoint from what the worker touches.
#[derive(Debug)]
pub struct Umem {
    area: Mapping,
    frame_size: u32,
    frames: u32,
    backing: Backing,
    /// Free frame base addresses (offsets into the area). Capacity is `frames` and
    /// never grows, so push and pop never allocate.
    free: Vec<u64>,
    /// Per frame: the port whose kernel rings hold it, or [`NO_OWNER`]. Lets a removed
    /// port's frames (on its fill, rx and tx rings, or in the kernel's own cache of
    /// fill entries) come back to the pool once its socket is closed.
    owner: Box<[u16]>,
}

/// The frame is the worker's (pool, batch, parked), not on any port's rings.
pub const NO_OWNER: u16 = u16::MAX;

impl Umem {
    /// Maps and initialises a UMEM; every frame starts in the free pool.
    pub fn new(cfg: &UmemConfig) -> Result<Umem, UmemError> {
        if !cfg.frame_size.is_power_of_two() || !(2048..=4096).contains(&cfg.frame_size) {
            return Err(UmemError::Config(format!("frame_size {} must be 2048 or 4096", cfg.frame_size)));
        }
        if cfg.frames == 0 {
            return Err(UmemError::Config("frames must be at least 1".into()));
        }
        let bytes = cfg.frames as usize * cfg.frame_size as usize;
        let huge_bytes = bytes.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
        let needed = huge_bytes / HUGEPAGE_SIZE;
        let base = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let (area, backing) = match cfg.hugepages {
            HugepagePolicy::Off => (map_normal(bytes)?, Backing::NormalPages),
            HugepagePolicy::Require => {
                let free = free_hugepages_within(needed);
                if free < needed {
                    return Err(UmemError::HugepagesMissing { needed, free, missing: needed - free });
                }
                let m = Mapping::new(huge_bytes, base | libc::MAP_HUGETLB, -1, 0).map_err(|source| UmemError::Map {
                    bytes: huge_bytes,
                    what: "hugepages",
                    source,
                })?;
                (m, Backing::Hugepages)
            }
            HugepagePolicy::Auto => {
                let free = free_hugepages_within(needed);
                let m =
                    if free >= needed { Mapping::new(huge_bytes, base | libc::MAP_HUGETLB, -1, 0).ok() } else { None };
                match m {
                    Some(m) => (m, Backing::Hugepages),
                    None => {
                        tracing::warn!(
                            needed,
                            free,
                            "not enough free 2 MiB hugepages for the UMEM; using normal pages \
                             (slower: more TLB misses). Reserve pages with `sysctl -p hugepages.conf`"
                        );
                        (map_normal(bytes)?, Backing::NormalPages)
                    }
                }
            }
        };
        let mut free = Vec::with_capacity(cfg.frames as usize);
        // Highest address first, so pops hand out low addresses first (easier to read in
        // traces; no other meaning).
        free.extend((0..u64::from(cfg.frames)).rev().map(|i| i * u64::from(cfg.frame_size)));
        let owner = vec![NO_OWNER; cfg.frames as usize].into_boxed_slice();
        Ok(Umem { area, frame_size: cfg.frame_size, frames: cfg.frames, backing, free, owner })
    }

    /// Start of the area, for `XDP_UMEM_REG`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.area.as_ptr()
    }

    /// Registered length: whole frames only.
    pub fn len_bytes(&self) -> usize {
        self.frames as usize * self.frame_size as usize
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Total frames.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Hugepages or normal pages.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Frames in the free pool.
    pub fn free_frames(&self) -> u32 {
        self.free.len() as u32
    }

    /// Takes a free frame (its base address), if any.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns a frame to the pool; any address inside the frame names it.
    #[inline]
    pub fn free(&mut self, addr: u64) {
        debug_assert!(self.free.len() < self.free.capacity(), "frame freed twice");
        self.free.push(addr & !u64::from(self.frame_size - 1));
    }

    /// Records that the rings of port `owner` now hold the frame at `addr`.
    #[inline]
    pub fn lend(&mut self, addr: u64, owner: u16) {
        let i = (addr / u64::from(self.frame_size)) as usize;
        if let Some(o) = self.owner.get_mut(i) {
            *o = owner;
        }
    }

    /// Records that the frame at `addr` is back with the worker.
    #[inline]
    pub fn take_back(&mut self, addr: u64) {
        self.lend(addr, NO_OWNER);
    }

    /// Returns to the pool every frame lent to `owner`, whose socket must be closed
    /// (so the kernel no longer touches them). Returns how many came back.
    pub fn reclaim(&mut self, owner: u16) -> u32 {
        let mut n = 0;
        for i in 0..self.owner.len() {
            if self.owner[i] == owner {
                self.owner[i] = NO_OWNER;
                self.free(i as u64 * u64::from(self.frame_size));
                n += 1;
            }
        }
        n
    }

    /// Where a region of this UMEM is, for registering it with a socket.
    pub fn region(&self) -> UmemRegion {
        UmemRegion { addr: self.area.as_ptr() as u64, len: self.len_bytes() as u64, frame_size: self.frame_size }
    }

    #[inline(always)]
    fn check(&self, addr: u64, len: u32) -> usize {
        // Inside one frame (offset in frame + len within the frame) and inside the UMEM.
        let in_frame = (addr & u64::from(self.frame_size - 1)) + u64::from(len) <= u64::from(self.frame_size);
        assert!(in_frame && addr < self.len_bytes() as u64, "frame out of UMEM");
        addr as usize
    }

    /// The bytes of `len` at `addr`. Panics if they leave the frame or the UMEM: a
    /// descriptor from the kernel is always inside, so this is an invariant check.
    #[inline]
    pub fn data(&self, addr: u64, len: u32) -> &[u8] {
        let start = self.check(addr, len);
        // SAFETY: `check` proved the range lies inside the mapping, which lives as long
        // as `self`; the frame is owned by the worker (not on a kernel ring) by the
        // module's ownership rules, so nothing writes it concurrently.
        unsafe { core::slice::from_raw_parts(self.area.as_ptr().add(start), len as usize) }
    }

    /// The bytes of `len` at `addr`, writable.
    #[inline]
    pub fn data_mut(&mut self, addr: u64, len: u32) -> &mut [u8] {
        let start = self.check(addr, len);
        // SAFETY: as in `data`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.area.as_ptr().add(start), len as usize) }
    }

    /// Copies frame `src` (`len` bytes at `src_addr`) into a new frame at the same
    /// headroom, returning its address; `None` when the pool is empty.
    #[inline]
    pub fn clone_frame(&mut self, src_addr: u64, len: u32) -> Option<u64> {
        let base = self.alloc()?;
        let dst = base + (src_addr & u64::from(self.frame_size - 1));
        self.check(src_addr, len);
        self.check(dst, len);
        // SAFETY: both ranges are inside the mapping (checked) and in different frames
        // (`base` came from the free pool, `src_addr` is owned by the caller), so they
        // do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.area.as_ptr().add(src_addr as usize),
                self.area.as_ptr().add(dst as usize),
                len as usize,
            );
        }
        Some(dst)
    }
}

/// Free hugepages, waiting up to a second for `needed` of them: the kernel unpins an
/// AF_XDP UMEM in deferred work after its sockets close, so a daemon restarted at once
/// would otherwise find its predecessor's pages still taken.
fn free_hugepages_within(needed: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let free = free_hugepages();
        if free >= needed || std::time::Instant::now() >= deadline {
            return free;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn map_normal(bytes: usize) -> Result<Mapping, UmemError> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    Mapping::new(bytes, flags, -1, 0).map_err(|source| UmemError::Map { bytes, what: "normal pages", source })
}

/// `HugePages_Free` from /proc/meminfo (2 MiB pages), 0 if unreadable.
pub fn free_hugepages() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("HugePages_Free:").map(|v| v.trim().parse().ok())).flatten()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem(frames: u32) -> Umem {
        Umem::new(&UmemConfig { frames, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap()
    }

    #[test]
    fn pool_hands_out_every_frame_once() {
        let mut u = umem(8);
        let mut got: Vec<u64> = (0..8).map(|_| u.alloc().unwrap()).collect();
        assert!(u.alloc().is_none());
        got.sort();
        assert_eq!(got, (0..8).map(|i| i * 4096).collect::<Vec<_>>());
        u.free(4096 + FRAME_HEADROOM as u64 + 10); // an address inside frame 1
        assert_eq!(u.alloc(), Some(4096));
    }

    #[test]
    fn reclaim_returns_only_the_owners_frames() {
        let mut u = umem(8);
        let a: Vec<u64> = (0..6).map(|_| u.alloc().unwrap()).collect();
        // Port 3 holds a[0..3] (one received back), port 4 holds a[3..5], a[5] is the worker's.
        for &f in &a[..3] {
            u.lend(f, 3);
        }
        u.take_back(a[2] + u64::from(FRAME_HEADROOM));
        u.lend(a[3], 4);
        u.lend(a[4], 4);
        assert_eq!(u.reclaim(3), 2);
        assert_eq!(u.free_frames(), 4);
        assert_eq!(u.reclaim(3), 0, "reclaiming twice frees nothing twice");
        assert_eq!(u.reclaim(4), 2);
        assert_eq!(u.free_frames(), 6);
    }

    #[test]
    fn clone_keeps_offset_and_bytes() {
        let mut u = umem(4);
        let a = u.alloc().unwrap() + u64::from(FRAME_HEADROOM);
        u.data_mut(a, 5).copy_from_slice(b"hello");
        let b = u.clone_frame(a, 5).unwrap();
        assert_ne!(a, b);
        assert_eq!(b % 4096, u64::from(FRAME_HEADROOM));
        assert_eq!(u.data(b, 5), b"hello");
    }

    #[test]
    #[should_panic(expected = "frame out of UMEM")]
    fn data_cannot_cross_a_frame() {
        let u = umem(2);
        let _ = u.data(4000, 200);
    }

    #[test]
    fn bad_config() {
        let e = Umem::new(&UmemConfig { frames: 4, frame_size: 3000, hugepages: HugepagePolicy::Off });
        assert!(matches!(e, Err(UmemError::Config(_))));
    }

    #[test]
    fn require_says_how_many_pages_are_missing() {
        // Ask for more hugepages than any test machine has free.
        let e = Umem::new(&UmemConfig { frames: 1 << 22, frame_size: 4096, hugepages: HugepagePolicy::Require })
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, UmemError::HugepagesMissing { needed: 8192, .. }), "{msg}");
        assert!(msg.contains("missing") && msg.contains("hugepages.conf"), "{msg}");
    }
}
