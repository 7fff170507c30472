//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Included by buildtrace.bpf.c.

/* Fills family/addr/port from a user sockaddr; false for other families. */
static __always_inline bool read_sockaddr(struct event *ev, const void *ua)
{
	__u8 sa[28] = {};
	if (!ua)
		return false;
	if (bpf_probe_read_user(sa, sizeof(sa), ua) < 0 &&
	    bpf_probe_read_user(sa, 16, ua) < 0)
		return false;
	__u16 fam = *(__u16 *)sa;
	ev->port = bpf_ntohs(*(__u16 *)&sa[2]);
	ev->family = fam;
	if (fam == AF_INET_) {
		__builtin_memcpy(ev->addr, &sa[4], 4);
		return true;
	}
	if (fam == AF_INET6_) {
		__builtin_memcpy(ev->addr, &sa[8], 16);
		return true;
	}
	return false;
}

static __always_inline bool sock_peer(struct event *ev, struct sock *sk)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (port == 0)
		return false;
	ev->family = fam;
	ev->port = port;
	if (fam == AF_INET_) {
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(ev->addr, &d, 4);
		return true;
	}
	if (fam == AF_INET6_) {
		BPF_CORE_READ_INTO(&ev->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		return true;
	}
	return false;
}

/* The protocol on the wire: TCP for stream sockets (MPTCP's subflows are
 * TCP), the socket's protocol for datagram ones (UDP, ICMP ping sockets,
 * UDP-Lite), and for raw sockets the protocol they were opened with, *raw
 * set (IPPROTO_RAW: the caller writes the IP header, any protocol). */
static __always_inline __u32 proto_of(struct sock *sk, __u32 *raw)
{
	__u16 t = BPF_CORE_READ(sk, sk_type);
	__u16 p = BPF_CORE_READ(sk, sk_protocol);
	*raw = 0;
	if (t == SOCK_STREAM_)
		return p == IPPROTO_MPTCP_ || p == 0 ? IPPROTO_TCP_ : p;
	if (t == SOCK_DGRAM_)
		return p == 0 ? IPPROTO_UDP_ : p;
	if (t == SOCK_RAW_)
		*raw = 1;
	return p; /* SOCK_SEQPACKET: SCTP */
}

static __always_inline void emit_dns(struct scratch *s, struct cg_stats *st, bool out, const void *buf, long n)
{
	s->ev.kind = K_DNS;
	if (out)
		s->ev.flags |= EF_OUTGOING;
	if (n > DNS_MAX) {
		n = DNS_MAX;
		s->ev.flags |= EF_TRUNCATED;
	}
	__u32 pos = 0;
	if (n > 0)
		pos = append_user_bytes(s, 0, 0, buf, n);
	emit(s, st, pos);
}

/* Reads the first message of a sendmsg/recvmsg/sendmmsg/recvmmsg: its
 * address, first iovec and (for *mmsg) msg_len, in the caller's ABI. */
static __always_inline void read_msg(struct sargs *a, const void **ua, const void **buf, long *n)
{
	__u64 p = a->a[1];
	__u64 base = 0, len = 0, ml = 0;
	bool mm = a->nr == SC_SENDMMSG || a->nr == SC_RECVMMSG;
	if (a->compat) {
		/* struct compat_msghdr: 7 32-bit words; msg_len follows it */
		__u32 mh[7] = {}, iov[2] = {}, l = 0;
		bpf_probe_read_user(mh, sizeof(mh), (void *)p);
		*ua = (void *)(__u64)mh[0];
		if (mh[3] > 0)
			bpf_probe_read_user(iov, sizeof(iov), (void *)(__u64)mh[2]);
		base = iov[0];
		len = iov[1];
		if (mm) {
			bpf_probe_read_user(&l, sizeof(l), (void *)(p + sizeof(mh)));
			ml = l;
		}
	} else {
		struct user_msghdr mh = {};
		bpf_probe_read_user(&mh, sizeof(mh), (void *)p);
		*ua = mh.msg_name;
		struct iovec iov = {};
		if (mh.msg_iovlen > 0)
			bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov);
		base = (__u64)iov.iov_base;
		len = iov.iov_len;
		if (mm) {
			__u32 l = 0; /* mmsghdr.msg_len follows the msghdr */
			bpf_probe_read_user(&l, sizeof(l), (void *)(p + sizeof(struct user_msghdr)));
			ml = l;
		}
	}
	*buf = (void *)base;
	if (mm)
		*n = ml;
	if (*n > (long)len)
		*n = len;
}

/* socket(2) succeeded: an AF_PACKET socket (or the obsolete SOCK_PACKET)
 * sends frames no hook here sees; count it so the step is incomplete. */
static __always_inline int do_socket(struct sargs *a, struct cg_stats *st)
{
	__u32 fam = a->a[0], type = a->a[1] & 0xf;
	if (fam == AF_PACKET_ || type == SOCK_PACKET_)
		stat_inc(st, af_packet);
	return 0;
}

/* A socket made in another cgroup than the caller's, which the caller
 * moved bytes through (or connected): another local user's, passed over
 * SCM_RIGHTS on an abstract unix socket, which a step on the host network
 * shares (redteam9), or one inherited from outside. The packet counters go
 * by the socket's cgroup, so its bytes are charged to whoever made it, and
 * read/write on a socket are no network event: without this record the
 * step's trace shows nothing of it. Recorded (K_NET, op NOP_FOREIGN) with
 * the socket's peer when it has one, else its family alone, and b[0] the
 * cgroup it was made in; once per (socket, peer, process). Only IP sockets
 * (what the counters would have charged to the step) and AF_PACKET ones
 * (which nothing sees): unix sockets (BuildKit's --mount=type=ssh) and
 * netlink are no egress. Costs a tracked caller, per call on a socket,
 * three loads past fd_sock; untracked callers never get here. */
static __always_inline bool foreign_sock(struct sock *sk, __u64 cg, struct cg_stats *st)
{
	if (!sk)
		return false;
	struct sock *k = kcast(sk, struct sock);
	__u16 fam = k->__sk_common.skc_family;
	if (fam != AF_INET_ && fam != AF_INET6_ && fam != AF_PACKET_)
		return false;
	/* The cgroup2 cgroup the socket was made in (sk_alloc; an accepted
	 * socket has its listener's): what bpf_skb_cgroup_id reports for
	 * its packets. */
	struct cgroup *owner = k->sk_cgrp_data.cgroup;
	__u64 id = owner ? owner->kn->id : 0;
	if (id == cg)
		return false;
	struct scratch *s = begin(K_NET, cg);
	if (!s)
		return true;
	s->ev.a[0] = NOP_FOREIGN;
	s->ev.b[0] = id;
	s->ev.family = fam;
	if (fam != AF_PACKET_) {
		__u32 raw = 0;
		s->ev.a[1] = proto_of(sk, &raw);
		s->ev.a[3] = raw;
		sock_peer(&s->ev, sk);
	}
	struct net_key nk = {.sk = (__u64)sk, .port = s->ev.port, .op = NOP_FOREIGN, .tgid = s->ev.pid};
	__builtin_memcpy(nk.addr, s->ev.addr, 16);
	__u8 one = 1;
	if (bpf_map_update_elem(&netseen, &nk, &one, BPF_NOEXIST) == 0)
		emit(s, st, 0);
	return true;
}

/* io_submit(2), Linux AIO: each iocb it submits reads or writes its
 * descriptor in the caller's context, through the file's read_iter or
 * write_iter, a socket's too (sock_write_iter sends). None of the calls
 * foreign_sock looks at is made: a step wrote another local user's socket
 * with IOCB_CMD_PWRITE unseen (redteam16). Each submitted iocb's
 * descriptor (the call returns how many it submitted, the first ones of
 * the array) goes through foreign_sock. The array and the iocbs are read
 * from user memory after the call: a thread rewriting them meanwhile is
 * the argument race docs/bpf.md names. */
#define AIO_FILDES_OFF 20 /* struct iocb (uapi, one layout for every ABI): aio_fildes */
#define AIO_MAX (1 << 20) /* more than io_setup's limit (fs.aio-max-nr) */

struct aio_walk {
	__u64 iocbpp; /* the user array of iocb pointers */
	__u64 cg;
	__u32 compat; /* 32-bit pointers in the array */
};

static long aio_step(__u32 i, struct aio_walk *w)
{
	__u64 p = 0;
	if (w->compat) {
		__u32 p32 = 0;
		if (bpf_probe_read_user(&p32, sizeof(p32), (void *)(w->iocbpp + (__u64)i * 4)) < 0)
			return 0;
		p = p32;
	} else if (bpf_probe_read_user(&p, sizeof(p), (void *)(w->iocbpp + (__u64)i * 8)) < 0) {
		return 0;
	}
	__u32 fd = 0;
	if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(p + AIO_FILDES_OFF)) < 0)
		return 0;
	struct cg_stats *st = tracked_stats(w->cg);
	if (!st)
		return 1;
	foreign_sock(fd_sock(bpf_get_current_task_btf(), fd), w->cg, st);
	return 0;
}

static __always_inline int do_io_submit(struct sargs *a, long ret, __u64 cg)
{
	struct aio_walk w = {.iocbpp = a->a[2], .cg = cg, .compat = a->compat};
	if (ret <= 0)
		return 0;
	bpf_loop(ret < AIO_MAX ? ret : AIO_MAX, aio_step, &w, 0);
	return 0;
}

/* a->nr is an enum sc. ret < 0 only for connect: a failed attempt is
 * recorded with its errno. cg is the caller's cgroup, st its counters, sk
 * the socket of descriptor a->a[0] (NULL if it is none), foreign whether
 * it was made in another cgroup (foreign_sock): its record is flagged, so
 * the address a sendto or sendmsg names on an unconnected one (which
 * foreign_sock's peer-less record lacks) is marked too. */
static __always_inline int do_net(struct sargs *a, long ret, __u64 cg, struct cg_stats *st, struct sock *sk, bool foreign)
{
	if (a->nr == SC_SOCKET)
		return do_socket(a, st);
	/* DNS answers are read from the packets (skb_dns), never from the
	 * receiver's memory: its sender's address need not have been written
	 * by the kernel (a length of 0), and its buffer can be rewritten by
	 * another thread after the kernel's copy (redteam9). */
	if (a->nr == SC_READ || a->nr == SC_RECV || a->nr == SC_RECVFROM || a->nr == SC_RECVMSG || a->nr == SC_RECVMMSG)
		return 0;
	if (!sk)
		return 0;
	struct scratch *s = begin(K_NET, cg);
	if (!s)
		return 0;
	__u32 raw = 0;
	__u32 proto = proto_of(sk, &raw);
	s->ev.a[1] = proto;
	s->ev.a[3] = raw;
	__u64 *x = a->a;
	const void *ua = NULL, *buf = NULL;
	long n = ret;
	bool net = true;
	__u32 op = 0;
	switch (a->nr) {
	case SC_CONNECT:
		op = NOP_CONNECT; ua = (void *)x[1];
		if (ret < 0 && ret != -EINPROGRESS_)
			s->ev.a[2] = -ret;
		break;
	case SC_SENDTO: op = NOP_SENDTO; ua = (void *)x[4]; buf = (void *)x[1]; break;
	case SC_SEND: case SC_WRITE: op = NOP_SENDTO; buf = (void *)x[1]; net = a->nr == SC_SEND; break;
	case SC_SENDMSG: case SC_SENDMMSG:
		read_msg(a, &ua, &buf, &n);
		op = NOP_SENDMSG;
		break;
	default:
		return 0;
	}
	/* A connect that succeeded or is under way set the socket's peer from
	 * the kernel's copy of the address: read that, not user memory,
	 * which another thread may have rewritten since (docs/bpf.md). */
	bool got = a->nr == SC_CONNECT && s->ev.a[2] == 0 && sock_peer(&s->ev, sk);
	if (!got && !(ua && read_sockaddr(&s->ev, ua)) && !sock_peer(&s->ev, sk))
		return 0;
	if (s->ev.family != AF_INET_ && s->ev.family != AF_INET6_)
		return 0;
	s->ev.a[0] = op;
	if (foreign)
		s->ev.flags |= EF_FOREIGN;
	if (net) {
		/* Once per socket, address, way and outcome (errno), per process. */
		struct net_key k = {.sk = (__u64)sk, .port = s->ev.port, .op = op | (s->ev.a[2] << 4), .tgid = s->ev.pid};
		__builtin_memcpy(k.addr, s->ev.addr, 16);
		__u8 one = 1;
		if (bpf_map_update_elem(&netseen, &k, &one, BPF_NOEXIST) == 0)
			emit(s, st, 0);
	}
	if (proto == IPPROTO_UDP_ && !raw && s->ev.port == 53 && op != NOP_CONNECT && ret >= 0)
		emit_dns(s, st, true, buf, n);
	return 0;
}

/* ---- bytes per destination ---- */

/* Scratch for skb_dns: it runs in softirq, which can interrupt a system
 * call hook that is filling scratch_map on the same CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} skb_scratch SEC(".maps");

/* A UDP datagram from port 53 delivered to a socket of a tracked cgroup:
 * a DNS answer as the kernel received it, its sender from the IP header
 * (k), its payload from off (after the UDP header). No task: pid 0. */
static __always_inline void skb_dns(struct __sk_buff *skb, struct cg_stats *st, struct traffic_key *k, __u32 off)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&skb_scratch, &zero);
	if (!s)
		return;
	__builtin_memset(&s->ev, 0, sizeof(s->ev));
	s->ev.ts = bpf_ktime_get_ns();
	s->ev.cgroup_id = k->cgroup_id;
	s->ev.kind = K_DNS;
	s->ev.family = k->family;
	s->ev.port = k->port;
	__builtin_memcpy(s->ev.addr, k->addr, 16);
	long n = (long)skb->len - (long)off;
	if (n > DNS_MAX) {
		n = DNS_MAX;
		s->ev.flags |= EF_TRUNCATED;
	}
	__u32 pos = 0;
	if (n > 0 && bpf_skb_load_bytes(skb, off, s->data, n) == 0) {
		s->ev.len[0] = n;
		pos = n;
	}
	emit(s, st, pos);
}

static __always_inline void count_skb(struct __sk_buff *skb, bool egress)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct cg_stats *st = tracked_stats(cg);
	if (!st)
		return;
	struct traffic_key k = {.cgroup_id = cg};
	__u32 l4 = 0;
	bool nol4 = false; /* no upper-layer header to read ports from */
	if (skb->protocol == bpf_htons(ETH_P_IP_)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return;
		k.family = AF_INET_;
		k.proto = ip.protocol;
		__builtin_memcpy(k.addr, egress ? &ip.daddr : &ip.saddr, 4);
		l4 = ip.ihl * 4;
		/* A fragment other than the first has no upper-layer header:
		 * its payload read as ports made a destination up. */
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			nol4 = true;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return;
		k.family = AF_INET6_;
		k.proto = ip6.nexthdr;
		__builtin_memcpy(k.addr, egress ? &ip6.daddr : &ip6.saddr, 16);
		l4 = sizeof(ip6);
		/* Skip extension headers to the upper-layer protocol: a step
		 * can add them (IPV6_DSTOPTS with CAP_NET_RAW, IPV6_RTHDR),
		 * which made a UDP datagram "ip60 <addr>:0" (redteam9). A
		 * fragment other than the first has no upper-layer header. */
		for (int i = 0; i < 6; i++) {
			__u8 h[4];
			if (k.proto != IPV6_HOPOPTS_ && k.proto != IPV6_ROUTING_ && k.proto != IPV6_DSTOPTS_ &&
			    k.proto != IPV6_FRAGMENT_)
				break;
			if (bpf_skb_load_bytes(skb, l4 & 0xffff, h, sizeof(h)) < 0) {
				nol4 = true;
				break;
			}
			if (k.proto == IPV6_FRAGMENT_) {
				if (((h[2] << 8) | h[3]) & 0xfff8)
					nol4 = true;
				l4 += 8;
			} else {
				l4 += (h[1] + 1) * 8;
			}
			k.proto = h[0];
		}
	} else {
		return;
	}
	/* Every protocol with ports starts its header with them; without
	 * the port, a policy entry with one would not match (redteam9: a
	 * UDP-Lite datagram was "udplite <addr>:0"). */
	if (!nol4 && (k.proto == IPPROTO_TCP_ || k.proto == IPPROTO_UDP_ || k.proto == IPPROTO_UDPLITE_ ||
		      k.proto == IPPROTO_SCTP_ || k.proto == IPPROTO_DCCP_)) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, l4 & 0xffff, ports, sizeof(ports)) == 0) {
			k.port = bpf_ntohs(egress ? ports[1] : ports[0]);
			/* A datagram from local port 53 can pass for a resolver's
			 * answer: IP_PKTINFO sets any local source address without
			 * privilege, IP_TRANSPARENT (CAP_NET_RAW) any address at
			 * all (redteam9). Go then confirms none of its names. */
			if (egress && k.proto == IPPROTO_UDP_ && bpf_ntohs(ports[0]) == 53)
				stat_inc(st, dns_source);
			if (!egress && k.proto == IPPROTO_UDP_ && k.port == 53)
				skb_dns(skb, st, &k, (l4 & 0xffff) + 8);
		}
	}
	struct traffic_val zero = {}, *v;
	v = bpf_map_lookup_elem(&traffic, &k);
	if (!v) {
		/* -EEXIST is a race with another CPU; anything else (-E2BIG:
		 * the map is full) loses this packet's bytes: count it. */
		long err = bpf_map_update_elem(&traffic, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&traffic, &k);
		if (!v) {
			if (err)
				stat_inc(st, traffic_full);
			return;
		}
	}
	if (egress)
		__sync_fetch_and_add(&v->sent, skb->len);
	else
		__sync_fetch_and_add(&v->received, skb->len);
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	count_skb(skb, true);
	return 1;
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb)
{
	count_skb(skb, false);
	return 1;
}

