//! Counters: per port, per worker, per drop reason.
//!
//! Thread-safety: each [`WorkerStats`] has exactly one writer, its worker, which adds
//! with a relaxed load and store (no locked instruction on the hot path). Any thread may
//! read at any time with relaxed loads; a reader sees each counter's value at some
//! recent moment, and counters only grow.

use core::sync::atomic::{AtomicU64, Ordering};

/// A counter with one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        // Relaxed load and store: there is one writer, so no update can be lost, and
        // readers need no ordering with other memory.
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, v: u64) {
        // Relaxed: a gauge read at any recent moment is fine.
        self.0.store(v, Ordering::Relaxed)
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> u64 {
        // Relaxed: see the module docs.
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a packet was dropped. Indexes the per-worker drop counters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The name used in metrics and the CLI.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt", "Shorter than an Ethernet header.";
    VlanTruncated => "vlan_truncated", "802.1Q TPID with no room for the tag.";
    VlanUnsupported => "vlan_unsupported", "QinQ (802.1ad) or a second tag.";
    VlanNotAllowed => "vlan_not_allowed", "Tagged frame on an access port, or a VLAN the trunk does not carry.";
    UntaggedNotAllowed => "untagged_not_allowed", "Untagged frame on a trunk port without a native network.";
    SourceMulticast => "source_multicast", "Multicast or zero source MAC.";
    ArpTruncated => "arp_truncated", "ARP shorter than an Ethernet/IPv4 ARP packet.";
    Ipv4Truncated => "ipv4_truncated", "IPv4 header or payload shorter than its length fields say.";
    Ipv4BadHeader => "ipv4_bad_header", "IPv4 with a bad version, IHL or total length.";
    Ipv6Truncated => "ipv6_truncated", "IPv6 header or payload shorter than its length fields say.";
    Ipv6BadHeader => "ipv6_bad_header", "IPv6 with a bad version.";
    NoPort => "no_port", "For or from a port being removed (not in the current tables, or gone while the packet waited).";
    SamePort => "same_port", "Destination is on the port the frame came from.";
    FloodNoFrame => "flood_no_frame", "No free frame for a flood copy.";
    FloodNoTarget => "flood_no_target", "Flooded in a network with no port but the ingress one.";
    TxRingFull => "tx_ring_full", "The output port's tx ring was full, all its UMEM frames were in flight, or one batch made more frames than the output queues hold (fragments).";
    TooBig => "too_big", "Larger than the output port can send.";
    ArpUnsupported => "arp_unsupported", "ARP to a gateway that is not Ethernet/IPv4, or not a request or reply.";
    NdpInvalid => "ndp_invalid", "ICMPv6 to a gateway with a bad checksum, hop limit or option.";
    Ipv4BadChecksum => "ipv4_bad_checksum", "Routed IPv4 packet whose header checksum is wrong.";
    L3Unsupported => "l3_unsupported", "Sent to a gateway MAC but neither ARP, IPv4 nor IPv6.";
    L3Multicast => "l3_multicast", "Multicast or broadcast IP sent to a gateway MAC (not routed).";
    LinkLocal => "link_local", "IPv6 link-local source or destination: never routed.";
    GatewayUnsupported => "gateway_unsupported", "To a gateway address, but not something it answers (it answers echo).";
    TtlExceeded => "ttl_exceeded", "TTL or hop limit ran out (time exceeded sent if allowed).";
    NoRoute => "no_route", "No route to the destination (unreachable sent if allowed).";
    RouteDrop => "route_drop", "Matched a drop (blackhole) route.";
    NeighFailed => "neigh_failed", "Next hop did not answer ARP/ND (unreachable sent if allowed).";
    NeighQueueFull => "neigh_queue_full", "Next hop unresolved and the waiting queue is full.";
    NeighTimeout => "neigh_timeout", "Waited too long for its next hop to resolve.";
    FragNeeded => "frag_needed", "Larger than the next hop's MTU: DF set or IPv6 (fragmentation needed / packet too big sent), or more than 32 fragments.";
    FragNoFrame => "frag_no_frame", "No free frames for the fragments of a packet without DF (the whole packet is dropped).";
    NoFrame => "no_frame", "No free frame to build a packet the switch sends itself.";
    UnderlayUnsupported => "underlay_unsupported", "On the uplink, neither IPv4 nor IPv6 (the uplink's XDP program passes those to the kernel).";
    UnderlayNotOurs => "underlay_not_ours", "On the uplink, not to this node's VTEP address and VXLAN port.";
    VxlanFragment => "vxlan_fragment", "A fragment of a VXLAN packet (senders set DF; fragments are not reassembled).";
    VxlanTruncated => "vxlan_truncated", "UDP or VXLAN header, or the inner Ethernet frame, cut short.";
    VxlanBadChecksum => "vxlan_bad_checksum", "Outer UDP checksum present and wrong.";
    VxlanBadFlags => "vxlan_bad_flags", "VXLAN header without the I flag, or with bits of an extension set.";
    VxlanWrongVni => "vxlan_wrong_vni", "VXLAN network identifier this node does not serve.";
    VxlanInnerMac => "vxlan_inner_mac", "Inner frame not addressed to this node's VTEP MAC.";
    VxlanInnerUnsupported => "vxlan_inner_unsupported", "Inner frame neither IPv4 nor IPv6 (an L3 overlay carries only those), or 802.1Q-tagged (an L2 overlay carries untagged frames).";
    VxlanUnknownPeer => "vxlan_unknown_peer", "A stretched network's frame from an underlay address that is no configured peer.";
    PeerUnresolved => "peer_unresolved", "The remote node's underlay next hop has no MAC yet (the kernel is resolving it).";
    EncapNoRoom => "encap_no_room", "No headroom in the frame for the outer headers.";
}

/// Counters of one port on one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames sent.
    pub tx_packets: Counter,
    /// Bytes sent.
    pub tx_bytes: Counter,
    /// Frames sent as flood copies (broadcast, multicast, unknown unicast).
    pub tx_flood: Counter,
    /// The kernel's counters of this port's AF_XDP socket (XDP_STATISTICS), copied
    /// once a second.
    pub xsk: XskCounters,
}

impl PortCounters {
    /// Zeroes every counter: the port id was freed and will name another port. Only
    /// the owning worker calls this.
    pub fn reset(&self) {
        for c in [&self.rx_packets, &self.rx_bytes, &self.tx_packets, &self.tx_bytes, &self.tx_flood] {
            c.set(0);
        }
        let x = &self.xsk;
        for c in [&x.rx_dropped, &x.rx_ring_full, &x.rx_fill_ring_empty, &x.rx_invalid_descs, &x.tx_invalid_descs] {
            c.set(0);
        }
    }
}

/// The kernel's per-socket AF_XDP counters, as last read.
#[derive(Debug, Default)]
pub struct XskCounters {
    /// Frames the kernel dropped for this socket.
    pub rx_dropped: Counter,
    /// Dropped because the rx ring was full (the worker fell behind).
    pub rx_ring_full: Counter,
    /// Arrived while the fill ring was empty (no buffer to receive into).
    pub rx_fill_ring_empty: Counter,
    /// Invalid rx descriptors.
    pub rx_invalid_descs: Counter,
    /// Invalid tx descriptors.
    pub tx_invalid_descs: Counter,
}

/// What the routing stage did, per worker.
#[derive(Debug, Default)]
pub struct L3Counters {
    /// Packets routed (TTL decremented, MACs rewritten).
    pub routed: Counter,
    /// ARP replies for gateway addresses.
    pub arp_replies: Counter,
    /// Neighbour advertisements for gateway addresses.
    pub nd_adverts: Counter,
    /// Router advertisements sent.
    pub router_adverts: Counter,
    /// Echo replies from gateway addresses.
    pub echo_replies: Counter,
    /// ICMP / ICMPv6 errors sent (time exceeded, unreachable, too big).
    pub icmp_errors: Counter,
    /// Errors not sent because of the rate limit.
    pub icmp_rate_limited: Counter,
    /// ARP requests and neighbour solicitations sent.
    pub solicits: Counter,
    /// ARP and neighbour discovery messages consumed (answers to the switch).
    pub neigh_consumed: Counter,
    /// Packets parked while their next hop resolves.
    pub parked: Counter,
    /// Parked packets sent once it resolved.
    pub released: Counter,
    /// Neighbour events lost because the queue to control was full.
    pub neigh_events_lost: Counter,
    /// Fragments made of routed IPv4 packets without DF that were larger than the next
    /// hop's MTU (each one counted, the first included).
    pub fragments: Counter,
    /// Packets sent to a remote node (VXLAN-encapsulated, or routed over the underlay).
    pub to_peers: Counter,
    /// Packets received from remote nodes (decapsulated, or routed in from the underlay).
    pub from_peers: Counter,
}

/// Everything one worker counts. Sized for `max_ports` when the worker is created.
#[derive(Debug)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// By port id.
    pub ports: Box<[PortCounters]>,
    /// By drop reason.
    pub drops: [Counter; DropReason::COUNT],
    /// Poll loops that found work.
    pub busy_loops: Counter,
    /// Poll loops that found none.
    pub idle_loops: Counter,
    /// Batches processed.
    pub batches: Counter,
    /// Packets processed.
    pub packets: Counter,
    /// Learn events sent to control.
    pub learn_events: Counter,
    /// Learn events lost because the queue was full.
    pub learn_queue_full: Counter,
    /// TX kicks that failed with something other than EAGAIN.
    pub tx_kick_errors: Counter,
    /// Routing.
    pub l3: L3Counters,
    /// Generation of the tables the worker uses now (a gauge; lets control free old ones).
    pub generation: Counter,
    /// Frames in the worker's free pools (a gauge, updated once per loop).
    pub free_frames: Counter,
    /// Frames in the worker's UMEM: its own segment and its ports' (a gauge, updated
    /// once per loop).
    pub umem_frames: Counter,
    /// Batches by size: at most 1, 7, 31, 63, 64 packets (see [`BATCH_BUCKETS`]).
    pub batch_sizes: [Counter; 5],
}

/// Upper bounds of the batch-size buckets.
pub const BATCH_BUCKETS: [usize; 5] = [1, 7, 31, 63, 64];

impl WorkerStats {
    /// Zeroed counters for `max_ports` ports.
    pub fn new(worker: usize, max_ports: usize) -> WorkerStats {
        WorkerStats {
            worker,
            ports: (0..max_ports).map(|_| PortCounters::default()).collect(),
            drops: core::array::from_fn(|_| Counter::default()),
            busy_loops: Counter::default(),
            idle_loops: Counter::default(),
            batches: Counter::default(),
            packets: Counter::default(),
            learn_events: Counter::default(),
            learn_queue_full: Counter::default(),
            tx_kick_errors: Counter::default(),
            l3: L3Counters::default(),
            generation: Counter::default(),
            free_frames: Counter::default(),
            umem_frames: Counter::default(),
            batch_sizes: core::array::from_fn(|_| Counter::default()),
        }
    }

    /// Counts a batch of `n` packets in its size bucket.
    #[inline]
    pub fn batch(&self, n: usize) {
        let b = match n {
            0..=1 => 0,
            2..=7 => 1,
            8..=31 => 2,
            32..=63 => 3,
            _ => 4,
        };
        self.batch_sizes[b].add(1);
    }

    /// Counts a drop.
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1)
    }

    /// The count for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_counters() {
        let s = WorkerStats::new(0, 4);
        s.drop(DropReason::SamePort);
        s.drop(DropReason::SamePort);
        assert_eq!(s.drops(DropReason::SamePort), 2);
        assert_eq!(DropReason::ALL.iter().map(|r| s.drops(*r)).sum::<u64>(), 2);
        let names: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT, "names are unique");
    }
}
