//! UMEM: the packet memory of one worker, in segments, and the pools of free frames in
//! them.
//!
//! A segment is one kernel UMEM: a mapping registered with `XDP_UMEM_REG` by one
//! socket. Segment 0 is the worker's own (frames it makes: ARP requests, router
//! advertisements; in-memory ports); every AF_XDP port brings a segment of its own,
//! sized for its rings. A frame address names its segment in its top 32 bits and the
//! offset in it in the low 32, so a frame moves between a port and the pipeline as one
//! `u64`, and `addr & (frame_size - 1)` is still the offset in the frame.
//!
//! Why not one UMEM per worker shared by all its sockets (`XDP_SHARED_UMEM`)? A socket
//! on another interface or queue gets a buffer pool of its own, and the kernel sizes
//! that pool for every frame of the UMEM (one `xdp_buff_xsk` per frame, allocated and
//! initialised at bind): with thousands of ports that is O(ports × frames) of kernel
//! time and memory (3.5 ms and ~2 MB per socket at 14,000 frames, measured). A segment
//! per port keeps every bind O(its own frames). The price is a copy when a frame leaves
//! by a port of another segment; on veths the kernel copies each frame twice anyway
//! (into the UMEM on receive, into an skb on send), and a NIC's zero-copy queue is an
//! interface of its own, which never shared a pool with a pod's socket.

use crate::sys::Mapping;
use std::io;

/// Where packet data starts in a received frame: the kernel leaves `XDP_PACKET_HEADROOM`
/// (256 bytes) in front of it, which the pipeline uses to push headers (VLAN, VXLAN).
pub const FRAME_HEADROOM: u32 = 256;

/// A frame address's segment is its top 32 bits.
const SEGMENT_SHIFT: u32 = 32;

/// The segment of an AF_XDP port (the worker's own is 0).
#[inline]
pub fn port_segment(port: u16) -> u32 {
    u32::from(port) + 1
}

/// The segment a frame address is in.
#[inline(always)]
pub fn segment_of(addr: u64) -> u32 {
    (addr >> SEGMENT_SHIFT) as u32
}

/// The address the kernel knows a frame by: its offset in its segment.
#[inline(always)]
pub fn offset_of(addr: u64) -> u64 {
    addr & 0xffff_ffff
}

/// The frame at `offset` of segment `seg`.
#[inline(always)]
pub fn frame_addr(seg: u32, offset: u64) -> u64 {
    u64::from(seg) << SEGMENT_SHIFT | offset
}

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

/// What `XDP_UMEM_REG` needs to know of a [`Segment`]: plain numbers, so the thread that
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

/// A segment: one mapping that one socket registers as its UMEM, and its free frames.
#[derive(Debug)]
pub struct Segment {
    area: Mapping,
    frame_size: u32,
    frames: u32,
    backing: Backing,
    /// Free frames (offsets in the segment). Capacity is `frames` and never grows, so
    /// push and pop never allocate.
    free: Vec<u64>,
}

impl Segment {
    /// Maps a segment; every frame starts free. With hugepages, the frames fill the
    /// last 2 MiB page (so `frames` may come out larger than asked). Under `Require` it
    /// waits up to a second for pages a closed socket's UMEM still holds (see
    /// [`free_hugepages_within`]); under `Auto` it never waits, so that ports beyond
    /// the reservation are not slowed by it, and takes normal pages at once.
    pub fn new(cfg: &UmemConfig) -> Result<Segment, UmemError> {
        Segment::map(cfg, cfg.hugepages == HugepagePolicy::Require)
    }

    fn map(cfg: &UmemConfig, wait: bool) -> Result<Segment, UmemError> {
        if !cfg.frame_size.is_power_of_two() || !(2048..=4096).contains(&cfg.frame_size) {
            return Err(UmemError::Config(format!("frame_size {} must be 2048 or 4096", cfg.frame_size)));
        }
        if cfg.frames == 0 {
            return Err(UmemError::Config("frames must be at least 1".into()));
        }
        let bytes = cfg.frames as usize * cfg.frame_size as usize;
        let huge_bytes = bytes.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
        let needed = huge_bytes / HUGEPAGE_SIZE;
        let free_pages = || if wait { free_hugepages_within(needed) } else { free_hugepages() };
        let base = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let huge = || {
            Mapping::new(huge_bytes, base | libc::MAP_HUGETLB, -1, 0).map_err(|source| UmemError::Map {
                bytes: huge_bytes,
                what: "hugepages",
                source,
            })
        };
        let (area, backing) = match cfg.hugepages {
            HugepagePolicy::Off => (map_normal(bytes)?, Backing::NormalPages),
            HugepagePolicy::Require => {
                let free = free_pages();
                if free < needed {
                    return Err(UmemError::HugepagesMissing { needed, free, missing: needed - free });
                }
                (huge()?, Backing::Hugepages)
            }
            HugepagePolicy::Auto => match if free_pages() >= needed { huge().ok() } else { None } {
                Some(m) => (m, Backing::Hugepages),
                None => {
                    if wait {
                        tracing::warn!(
                            needed,
                            "not enough free 2 MiB hugepages for the UMEM; using normal pages \
                             (slower: more TLB misses). Reserve pages with `sysctl -p hugepages.conf`"
                        );
                    }
                    (map_normal(bytes)?, Backing::NormalPages)
                }
            },
        };
        let frames = (area.len() / cfg.frame_size as usize) as u32;
        let mut free = Vec::with_capacity(frames as usize);
        // Highest offset first, so pops hand out low addresses first (easier to read in
        // traces; no other meaning).
        free.extend((0..u64::from(frames)).rev().map(|i| i * u64::from(cfg.frame_size)));
        Ok(Segment { area, frame_size: cfg.frame_size, frames, backing, free })
    }

    /// Where the segment is, for `XDP_UMEM_REG`.
    pub fn region(&self) -> UmemRegion {
        UmemRegion { addr: self.area.as_ptr() as u64, len: self.len_bytes(), frame_size: self.frame_size }
    }

    /// Frames in the segment.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Frames in its pool.
    pub fn free_frames(&self) -> u32 {
        self.free.len() as u32
    }

    fn len_bytes(&self) -> u64 {
        u64::from(self.frames) * u64::from(self.frame_size)
    }
}

/// Where a segment's bytes are, kept apart from the pools so that the per-packet
/// lookup reads one small entry. `len` 0: no segment.
#[derive(Debug, Clone, Copy)]
struct View {
    base: *mut u8,
    len: u64,
}

impl View {
    const NONE: View = View { base: core::ptr::null_mut(), len: 0 };
}

/// One worker's packet memory: its segments and their free-frame pools.
///
/// Thread-safety: owned by exactly one worker thread; the kernel reads and writes frames
/// only while their addresses sit on a ring, which the ownership rules in the module
/// docs keep disjoint from what the worker touches.
#[derive(Debug)]
pub struct Umem {
    frame_size: u32,
    segments: Vec<Option<Segment>>,
    views: Vec<View>,
    /// Frames in all segments, and free in all pools (kept as frames move, so reading
    /// them costs nothing per packet).
    frames: u32,
    free: u32,
}

// SAFETY: the raw pointers in `views` point into mappings the Umem owns (its segments);
// moving the Umem to another thread moves their ownership with it.
unsafe impl Send for Umem {}

impl Umem {
    /// A UMEM with segment 0 of `cfg.frames` frames, waiting up to a second for
    /// hugepages a predecessor's sockets still hold (see [`free_hugepages_within`]).
    pub fn new(cfg: &UmemConfig) -> Result<Umem, UmemError> {
        let seg = Segment::map(cfg, true)?;
        let (frames, free) = (seg.frames, seg.frames);
        let view = View { base: seg.area.as_ptr(), len: seg.len_bytes() };
        Ok(Umem { frame_size: cfg.frame_size, segments: vec![Some(seg)], views: vec![view], frames, free })
    }

    /// Makes room for segments up to `segments - 1`, so that adding them later never
    /// allocates (workers do it at start-up).
    pub fn reserve(&mut self, segments: usize) {
        self.segments.reserve(segments.saturating_sub(self.segments.len()));
        self.views.reserve(segments.saturating_sub(self.views.len()));
    }

    /// Adds `seg` as segment `id` (a port's: [`port_segment`]). Its frames join the
    /// totals. Allocates only beyond what [`reserve`](Self::reserve) made room for.
    /// Panics if `id` is 0 or taken, or the frame sizes differ: control's invariants.
    pub fn add_segment(&mut self, id: u32, seg: Segment) {
        let i = id as usize;
        assert!(id != 0 && self.segments.get(i).is_none_or(Option::is_none), "segment {id} taken");
        assert_eq!(seg.frame_size, self.frame_size, "segment frame size");
        if i >= self.segments.len() {
            self.segments.resize_with(i + 1, || None);
            self.views.resize(i + 1, View::NONE);
        }
        self.frames += seg.frames;
        self.free += seg.free.len() as u32;
        self.views[i] = View { base: seg.area.as_ptr(), len: seg.len_bytes() };
        self.segments[i] = Some(seg);
    }

    /// Takes segment `id` out, with whatever frames are not in its pool: its socket
    /// must be closed (so the kernel no longer touches them) and no frame of it may be
    /// in the worker's hands. Returns it, for control to unmap (off the worker).
    pub fn remove_segment(&mut self, id: u32) -> Option<Segment> {
        let seg = self.segments.get_mut(id as usize)?.take()?;
        self.views[id as usize] = View::NONE;
        self.frames -= seg.frames;
        self.free -= seg.free.len() as u32;
        Some(seg)
    }

    /// True if segment `id` is there.
    #[inline]
    pub fn has_segment(&self, id: u32) -> bool {
        self.views.get(id as usize).is_some_and(|v| v.len != 0)
    }

    /// Where segment 0 is, for registering it with a socket (a worker that opens one
    /// socket on its own segment: the generator's, the tests').
    pub fn region(&self) -> UmemRegion {
        self.segments[0].as_ref().expect("segment 0 is never removed").region()
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Frames in all segments.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Segment 0's backing (ports' segments follow the same policy).
    pub fn backing(&self) -> Backing {
        self.segments[0].as_ref().map_or(Backing::NormalPages, |s| s.backing)
    }

    /// Frames free in all pools.
    pub fn free_frames(&self) -> u32 {
        self.free
    }

    /// Frames free in segment `seg`'s pool.
    #[inline]
    pub fn free_in(&self, seg: u32) -> u32 {
        self.segments.get(seg as usize).and_then(Option::as_ref).map_or(0, |s| s.free.len() as u32)
    }

    /// Takes a free frame of segment 0 (its base address), if any.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_in(0)
    }

    /// Takes a free frame of segment `seg`, if any.
    #[inline]
    pub fn alloc_in(&mut self, seg: u32) -> Option<u64> {
        let off = self.segments.get_mut(seg as usize)?.as_mut()?.free.pop()?;
        self.free -= 1;
        Some(frame_addr(seg, off))
    }

    /// Returns a frame to its segment's pool; any address inside the frame names it.
    #[inline]
    pub fn free(&mut self, addr: u64) {
        let mask = !u64::from(self.frame_size - 1);
        match self.segments.get_mut(segment_of(addr) as usize).and_then(Option::as_mut) {
            Some(s) => {
                debug_assert!(s.free.len() < s.free.capacity(), "frame freed twice");
                s.free.push(offset_of(addr) & mask);
                self.free += 1;
            }
            // A frame outlived its segment: the worker's invariants say never.
            None => debug_assert!(false, "frame {addr:#x} of a removed segment"),
        }
    }

    #[inline(always)]
    fn check(&self, addr: u64, len: u32) -> *mut u8 {
        // Inside one frame (offset in frame + len within the frame) and inside its segment.
        let v = self.views.get(segment_of(addr) as usize).copied().unwrap_or(View::NONE);
        let off = offset_of(addr);
        let in_frame = (off & u64::from(self.frame_size - 1)) + u64::from(len) <= u64::from(self.frame_size);
        assert!(in_frame && off < v.len, "frame out of UMEM");
        // SAFETY: off < v.len, the length of the mapping v.base starts.
        unsafe { v.base.add(off as usize) }
    }

    /// The bytes of `len` at `addr`. Panics if they leave the frame or the segment: a
    /// descriptor from the kernel is always inside, so this is an invariant check.
    #[inline]
    pub fn data(&self, addr: u64, len: u32) -> &[u8] {
        let p = self.check(addr, len);
        // SAFETY: `check` proved the range lies inside a mapping the Umem owns; the
        // frame is owned by the worker (not on a kernel ring) by the module's ownership
        // rules, so nothing writes it concurrently.
        unsafe { core::slice::from_raw_parts(p, len as usize) }
    }

    /// The bytes of `len` at `addr`, writable.
    #[inline]
    pub fn data_mut(&mut self, addr: u64, len: u32) -> &mut [u8] {
        let p = self.check(addr, len);
        // SAFETY: as in `data`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(p, len as usize) }
    }

    /// Copies frame `src` into a new frame of segment `seg`, at the same headroom;
    /// `None` when that pool is empty or there is no such segment.
    #[inline]
    pub fn clone_into(&mut self, seg: u32, src_addr: u64, len: u32) -> Option<u64> {
        let base = self.alloc_in(seg)?;
        let dst_addr = base + (src_addr & u64::from(self.frame_size - 1));
        self.copy(src_addr, dst_addr, len);
        Some(dst_addr)
    }

    /// Copies `len` bytes at `src_addr` to `dst_addr`, in another frame. Panics if
    /// they are in the same frame, or leave theirs (as [`data`](Self::data)).
    #[inline]
    pub fn copy(&mut self, src_addr: u64, dst_addr: u64, len: u32) {
        let frame = !u64::from(self.frame_size - 1);
        assert!(src_addr & frame != dst_addr & frame, "copy within one frame");
        let src = self.check(src_addr, len);
        let dst = self.check(dst_addr, len);
        // SAFETY: both ranges are inside mappings the Umem owns (checked), each inside
        // its own frame, and the frames differ (asserted: a frame address carries its
        // segment, so equal frame bits mean the same memory), so they do not overlap;
        // `&mut self` makes this the only access.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len as usize) };
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

    fn segment(frames: u32) -> Segment {
        Segment::new(&UmemConfig { frames, frame_size: 4096, hugepages: HugepagePolicy::Off }).unwrap()
    }

    #[test]
    fn segments_have_pools_of_their_own() {
        let mut u = umem(2);
        u.add_segment(port_segment(4), segment(3));
        assert_eq!((u.frames(), u.free_frames()), (5, 5));
        let s = port_segment(4);
        let a: Vec<u64> = (0..3).map(|_| u.alloc_in(s).unwrap()).collect();
        assert!(u.alloc_in(s).is_none(), "a segment hands out only its own frames");
        assert!(a.iter().all(|&f| segment_of(f) == s && offset_of(f).is_multiple_of(4096)));
        assert_eq!((u.free_in(s), u.free_in(0), u.free_frames()), (0, 2, 2));
        assert!(u.alloc_in(9).is_none(), "no such segment");
        u.data_mut(a[1] + 300, 4).copy_from_slice(b"abcd");
        u.free(a[1] + 300); // an address inside the frame names it
        assert_eq!(u.alloc_in(s), Some(a[1]));
        assert_eq!(u.data(a[1] + 300, 4), b"abcd", "segment bytes are the segment's own mapping");
        for f in a {
            u.free(f);
        }
        let back = u.remove_segment(s).unwrap();
        assert_eq!(back.frames(), 3);
        assert_eq!((u.frames(), u.free_frames()), (2, 2));
        assert!(!u.has_segment(s) && u.remove_segment(s).is_none());
    }

    #[test]
    fn a_removed_segment_takes_its_lent_frames_with_it() {
        let mut u = umem(2);
        u.add_segment(1, segment(4));
        // Two frames were on the (now closed) socket's rings: they leave with the segment.
        let _ = (u.alloc_in(1), u.alloc_in(1));
        assert_eq!(u.free_frames(), 4);
        u.remove_segment(1).unwrap();
        assert_eq!((u.frames(), u.free_frames()), (2, 2));
    }

    #[test]
    fn clone_into_another_segment_keeps_offset_and_bytes() {
        let mut u = umem(1);
        u.add_segment(2, segment(1));
        let a = u.alloc().unwrap() + u64::from(FRAME_HEADROOM);
        u.data_mut(a, 5).copy_from_slice(b"hello");
        let b = u.clone_into(2, a, 5).unwrap();
        assert_eq!((segment_of(b), offset_of(b)), (2, u64::from(FRAME_HEADROOM)));
        assert_eq!(u.data(b, 5), b"hello");
        assert!(u.clone_into(2, a, 5).is_none(), "segment 2 is empty now");
    }

    #[test]
    #[should_panic(expected = "frame out of UMEM")]
    fn data_of_a_missing_segment_is_an_invariant_break() {
        let u = umem(2);
        let _ = u.data(frame_addr(3, 0), 10);
    }

    #[test]
    fn clone_keeps_offset_and_bytes() {
        let mut u = umem(4);
        let a = u.alloc().unwrap() + u64::from(FRAME_HEADROOM);
        u.data_mut(a, 5).copy_from_slice(b"hello");
        let b = u.clone_into(0, a, 5).unwrap();
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
