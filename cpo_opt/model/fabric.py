"""Placement of parallel groups on the two-tier fabric, and collective times.

Layout (Megatron ``RankGenerator`` order): ranks are numbered TP innermost, then CP, then DP,
then PP outermost; MoE layers regroup the same ranks as ETP innermost, then EP, then EDP, then
PP. A group of ``g`` ranks whose consecutive members are ``stride = s`` ranks apart therefore
lives in a contiguous block of ``B = g s`` ranks aligned at a multiple of ``B`` (the block
holds ``s`` interleaved groups).

Placement as it is (``plan.placement = 0``, contiguous rank order over domains of ``D``
GPUs, ``D`` capped at the cluster): the domain boundaries (multiples of ``D``) cut each block
into pieces; a group has ``floor(L / s)`` (at least 1) members in a piece of ``L`` ranks. The
slowest member paces a collective (every member waits for the last), so a group is costed
with its smallest piece over all blocks of the cluster:

    m = clamp(floor(L_min / s), 1, g)

``L_min`` is the shortest segment between cuts over the ``N / B`` blocks. Block ``k`` starts
at residue ``r_k = k B mod D``; over a full period of ``D / gcd(B, D)`` blocks the residues
are all multiples of ``gcd(B, D)``, so ``L_min = gcd(B, D)``; clusters with fewer blocks are
enumerated (up to :data:`MAX_BLOCKS`). When ``B`` divides ``D`` or ``D`` divides ``B`` this is
the aligned count ``clamp(D / s, 1, g)``. Example: EP 64 (stride 1) on 72-GPU domains: blocks
of 64 start at residues 0, 64, 56, ... of 72, so some groups have only 8 members in one
domain and 56 in the next: the EP all-to-all of those groups sends 7/8 of its bytes over
scale-out, and they pace the step. On 64-GPU domains nothing leaves the domain.

Aligned placement (``plan.placement = 1``), what operators do on NVL72 racks: the job's
innermost blocks are kept whole inside domains and the GPUs left over in each domain stay
idle. The block is the *placement unit* ``u = max(tp cp, etp ep)`` (the TP x CP block of the
dense layers, or one EP group of the MoE layers: in Megatron's rank order every smaller group
nests inside it); a unit of ``u <= D`` GPUs sits in one domain, ``floor(D / u)`` units per
domain; a unit larger than a domain takes ``k = ceil(u / D)`` whole domains. So each group of
``k`` domains hosts ``floor(k D / u) u`` *working* GPUs and the rest idle (:func:`fill`):
EP 128 on 144-GPU domains works 128 of each 144 (16 idle), EP 64 on 72-GPU racks 64 of 72, EP
8 on 72-GPU racks all 72. Data parallelism, tokens per GPU and time to train follow from the
working GPUs (:mod:`cpo_opt.model.dims`), and every group is placed in rank order over the
working GPUs with ``floor(k D / u) u / k`` of them per domain, so the units never straddle.
When ``u`` divides ``D`` and the cluster is whole domains, aligned and contiguous placement
are the same layout.

The group then runs hierarchically: the share among the ``m`` in-domain members moves at
scale-up bandwidth, the share between the ``g / m`` domains at scale-out bandwidth. When
``m == g`` nothing leaves the domain; when ``m == 1`` everything does. This is the mechanism
the copper-vs-Passage study rests on: a larger domain keeps larger EP/TP/CP groups off the
scale-out network. A domain twice as large only removes cuts, so it never lowers ``m``.

Collective formulas (``V`` = full tensor bytes, ``n = g / m`` domains, ``B`` = achievable
bandwidth per GPU per direction, ``a`` = one-hop latency):

* reduce-scatter / all-gather (hierarchical ring for bandwidth, Thakur et al. 2005; NCCL):
  ``V (m-1)/m / B_up + (V/m) (n-1)/n / B_out + log2(m) a_up + log2(n) a_out``. The latency
  term is the log-depth one of tree/recursive-halving algorithms (NCCL switches to them for
  small messages), the same on both tiers, so moving members into the domain never adds
  latency.
* all-reduce: twice the reduce-scatter time.
* all-to-all with ``V`` bytes leaving each GPU's buffer spread evenly over the ``g`` members:
  ``max(V (m-1)/g / B_up, V (g-m)/g / B_out) + a_up + a_out [g > m] + (g - m) a_peer``;
  NVLink and NIC traffic proceed concurrently. ``a_peer`` (``a2a_peer_s``) is the cost of
  one message to one remote peer: an all-to-all posts one send and one receive per peer,
  and the NIC (or the proxy that drives it) handles them one after another, so a group
  spread over more remote peers pays more however few bytes each carries (DeepEP's
  low-latency kernels: ``A2A_PEER_S``). Peers inside the domain are reached by direct
  loads and stores over NVLink; their per-peer cost is not measured and taken as 0, so a
  larger domain (fewer remote peers) never adds latency.
* point-to-point: ``V / B + a`` on the tier the hop uses.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cpo_opt.model import smooth
from cpo_opt.model.config import System


MAX_BLOCKS = 32
"""Blocks enumerated when a cluster holds fewer than one period of block residues (beyond
that, and beyond a full period, the period's worst piece ``gcd(B, D)`` is used)."""


class Fill(NamedTuple):
    """How a plan's ranks fill the fabric: ``domain`` working GPUs per scale-up domain (the
    rank order's domain size) and ``world`` working GPUs in all (:func:`fill`)."""

    domain: object
    world: object


def placement_unit(plan):
    """GPUs aligned placement keeps whole inside a domain: ``max(tp cp, etp ep)`` (module
    docstring; in the plan space both are powers of two, so the smaller divides the larger)."""
    return jnp.maximum(plan.tp * plan.cp, plan.etp * plan.ep)


def fill(system: System, plan, temperature: float = 0.0) -> Fill:
    """Working GPUs per domain and in all, for ``plan.placement`` (module docstring).

    Contiguous: every GPU works, domains of ``D = min(domain_size, gpus)``. Aligned, with
    the unit ``u`` (:func:`placement_unit`) and ``k = ceil(u / D)`` domains per unit: each
    group of ``k`` domains hosts ``floor(k D / u) u`` working GPUs, a last partial domain
    (``k = 1``) ``floor(rem / u) u``; the rank order then sees ``floor(k D / u) u / k``
    working GPUs per domain. The aligned counts are whole numbers that a small change of the
    domain size or the cluster does not move (the next unit fits only at the next multiple),
    so their derivatives are zero (``stop_gradient``): a derivative of ``D / s`` would claim
    a gain that no layout delivers. The relaxed model searches contiguous plans.
    """
    d = smooth.smin(system.scale_up.domain_size, system.gpus, temperature)
    if isinstance(plan.placement, (int, float)) and float(plan.placement) == 0.0:
        return Fill(d, system.gpus)
    sg = jax.lax.stop_gradient
    dd, n = jnp.maximum(jnp.round(sg(d)), 1.0), jnp.round(sg(system.gpus))
    u = jnp.maximum(jnp.round(sg(placement_unit(plan))), 1.0)
    k = jnp.maximum(jnp.ceil(u / dd - 1e-9), 1.0)
    used = jnp.floor(k * dd / u + 1e-9) * u              # working GPUs per k domains
    groups = jnp.floor(n / (k * dd) + 1e-9)
    rem = n - groups * k * dd
    tail = jnp.where(k > 1.0, 0.0, jnp.floor(rem / u + 1e-9) * u)
    world = jnp.maximum(groups * used + tail, 1.0)
    a = jnp.where(plan.placement > 0, 1.0, 0.0)
    return Fill(d + a * (used / k - d), system.gpus + a * (world - system.gpus))


def _int(x):
    return jnp.maximum(jnp.round(jax.lax.stop_gradient(x)), 1.0).astype(jnp.int32)


GCD_STEPS = 22
"""Steps of the fixed-length Euclid in :func:`smallest_piece`: each least-absolute-remainder
step at least halves the smaller number, and the gcd is needed only for groups of fewer than
``gpus / MAX_BLOCKS`` ranks, i.e. below ``2**27 / 32 = 2**22`` (``cluster.gpus <= 2**27``,
:data:`cpo_opt.inputs.schema.RANGES`): 22 halvings reach 0."""


def _divmod(a, b):
    """``(a // b, a mod b)`` of int32 ``0 <= a <= 2**27``, ``1 <= b <= 2**27``, exactly and
    without an integer division (XLA's CPU backend divides integer vectors one element at a
    time, tens of cycles each). The float32 quotient is within ``1 + 3 a 2**-24 / b`` of
    ``a // b``, so ``|a - q b| <= 2 b + 24``; a second float32 quotient of that remainder is
    within one, and one correction each way makes both exact."""
    f32 = jnp.float32
    fb = b.astype(f32)
    q = jnp.floor(a.astype(f32) / fb).astype(jnp.int32)
    r = a - q * b
    q2 = jnp.floor(r.astype(f32) / fb).astype(jnp.int32)
    q, r = q + q2, r - q2 * b
    lo = r < 0
    q, r = jnp.where(lo, q - 1, q), jnp.where(lo, r + b, r)
    hi = r >= b
    return jnp.where(hi, q + 1, q), jnp.where(hi, r - b, r)


def smallest_piece_one_block(group, stride, domain):
    """:func:`smallest_piece` of a group whose block ``B = g s`` is the whole cluster (the
    world group, and the pipeline group, whose stride ``tp cp dp`` times ``pp`` is every
    working GPU): the one block is cut at each multiple of ``D``, so its shortest piece is
    ``min(B, D, B mod D)`` (``B mod D = 0`` read as ``D``), and the members in one domain are
    ``clamp(floor(L_min / s), 1, g)``. One remainder instead of the walk and the Euclid; equal
    to :func:`smallest_piece` whenever ``gpus < 2 B`` (tests/test_speed_exact.py)."""
    g, s, dom = _int(group), _int(stride), _int(domain)
    b = g * s
    tail = _divmod(b, dom)[1]
    l_min = jnp.minimum(jnp.minimum(b, dom), jnp.where(tail > 0, tail, dom))
    return jnp.clip(_divmod(l_min, s)[0], 1, g).astype(jnp.result_type(float))


def smallest_piece(group, stride, domain, gpus):
    """Members of the worst-placed group in one domain (module docstring), exact for
    integer sizes (up to ``2**27``): ``clamp(floor(L_min / s), 1, g)``.

    Computed without loops of data-dependent length (on a GPU each iteration of an XLA
    ``while`` waits on the host) and without integer divisions (:func:`_divmod`). Up to
    :data:`MAX_BLOCKS` blocks are walked in a fixed number of steps: the residue
    ``r_k = k B mod D`` advances by ``B mod D``, and block ``k``'s shortest piece is
    ``min(B, D - r_k, r_{k+1})`` (``r = 0`` read as ``D``; a block inside one domain gives
    ``B``). Once the blocks reach a period the walk's minimum is ``gcd(B, D)`` itself, so
    the gcd is needed only beyond :data:`MAX_BLOCKS` blocks, where ``B < gpus / 32``: there a
    fixed-length Euclid (:data:`GCD_STEPS` least-absolute-remainder steps on
    ``(B, D mod B)``, in float32, exact below ``2**24``) computes it."""
    g, s, dom, n = _int(group), _int(stride), _int(domain), _int(gpus)
    b = g * s
    blocks = _divmod(n, b)[0]
    # the walk over the first min(blocks, MAX_BLOCKS) blocks (at least one)
    alpha = _divmod(b, dom)[1]
    r = jnp.zeros_like(b)
    walk = b
    for k in range(MAX_BLOCKS):
        nxt = r + alpha
        nxt = jnp.where(nxt >= dom, nxt - dom, nxt)
        piece = jnp.minimum(dom - r, jnp.where(nxt > 0, nxt, dom))
        walk = jnp.minimum(walk, piece) if k == 0 else jnp.where(
            k < blocks, jnp.minimum(walk, piece), walk)
        r = nxt
    # beyond MAX_BLOCKS blocks: gcd(B, D) = gcd(B, D mod B), B < 2**22
    a = b.astype(jnp.float32)
    c = _divmod(dom, b)[1].astype(jnp.float32)
    for _ in range(GCD_STEPS):
        rem = jnp.abs(a - jnp.round(a / c) * c)  # c = 0: unused (kept below)
        a, c = jnp.where(c > 0, c, a), jnp.where(c > 0, rem, 0.0)
    l_min = jnp.where(blocks > MAX_BLOCKS, a.astype(jnp.int32), walk)
    return jnp.clip(_divmod(l_min, s)[0], 1, g).astype(jnp.result_type(float))


def members_in_domain(group, stride, system: System, temperature: float = 0.0,
                      at: Fill | None = None, whole: bool = False):
    """Members of a ``group`` (``stride`` apart) in one scale-up domain, for the worst-placed
    group of the cluster (module docstring). ``at``: the plan's :func:`fill` (default: every
    GPU working, contiguous domains). ``whole``: the caller knows that the group's block
    ``group x stride`` is every working GPU (:func:`smallest_piece_one_block`).

    Computed as the continuous aligned count ``clamp(D / s, 1, g)`` (smooth when
    ``temperature > 0``) times the straddle ratio ``m / clamp(D / s, 1, g)`` of the exact
    piece at the rounded integer sizes, held constant for derivatives: the value is the
    exact ``m`` at integer sizes, and derivatives in the domain size are those of the
    aligned count scaled by the ratio (a domain size between integers has no placement of
    its own, so the rounding cell keeps the ratio of its integer point).

    The relaxed model (``temperature > 0``) uses the aligned count alone: its plans have
    non-integer degrees, for which no rank layout exists, and a ratio that jumps wherever a
    group size crosses a half-integer would break its gradients. The search scores rounded
    plans with the exact model, straddling included."""
    at = at or Fill(smooth.smin(system.scale_up.domain_size, system.gpus, temperature),
                    system.gpus)
    d = at.domain
    g_ = jnp.maximum(group, 1.0)
    m_cont = smooth.clamp(d / stride, 1.0, g_, temperature)
    if not smooth.is_exact(temperature):
        return m_cont
    m_exact = (smallest_piece_one_block(group, stride, d) if whole
               else smallest_piece(group, stride, d, at.world))
    g, s, dd = _int(group), _int(stride), _int(d)
    ref = jnp.clip(dd / s, 1.0, g)
    return m_cont * jax.lax.stop_gradient(m_exact / ref)


def _s_per_byte_up(system: System):
    """Seconds per byte on the scale-up tier (achievable bandwidth), as a reciprocal so the
    many transfers of a plan multiply instead of dividing."""
    return 1.0 / (system.scale_up.bandwidth * system.constants.link_eff_scale_up)


def _s_per_byte_out(system: System):
    """Seconds per byte on the scale-out tier (achievable bandwidth)."""
    return 1.0 / (system.scale_out.bandwidth * system.constants.link_eff_scale_out)


def _log2(x):
    return jnp.log2(jnp.maximum(x, 1.0))


@dataclasses.dataclass(frozen=True)
class Comm:
    """A communication: its time (seconds) and the bytes one GPU sends over each tier."""

    time: object
    up_bytes: object
    out_bytes: object

    def __add__(self, other: "Comm") -> "Comm":
        return Comm(self.time + other.time, self.up_bytes + other.up_bytes,
                    self.out_bytes + other.out_bytes)

    def __mul__(self, k) -> "Comm":
        return Comm(self.time * k, self.up_bytes * k, self.out_bytes * k)

    __rmul__ = __mul__


NO_COMM = Comm(0.0, 0.0, 0.0)


class Group(NamedTuple):
    """A parallel group placed on the fabric: ``size`` ranks, ``in_domain`` of them per
    scale-up domain (:func:`members_in_domain`)."""

    size: object
    in_domain: object


def place(sizes, strides, system: System, temperature: float = 0.0, stacked: bool = False,
          at: Fill | None = None, whole: tuple[bool, ...] = ()) -> list[Group]:
    """Place several groups; ``stacked`` does it in one vectorized expression (a smaller
    graph for gradients) instead of one expression per group (faster batched evaluation).
    ``at``: the plan's :func:`fill` (contiguous or aligned placement, module docstring).
    ``whole``: per group, whether its block is every working GPU (:func:`members_in_domain`;
    unstacked only, where each group has its own expression)."""
    if not stacked:
        whole = tuple(whole) + (False,) * (len(sizes) - len(whole))
        return [Group(jnp.maximum(g, 1.0),
                      members_in_domain(g, st, system, temperature, at, w))
                for g, st, w in zip(sizes, strides, whole)]
    g = jnp.stack(jnp.broadcast_arrays(*[jnp.maximum(x, 1.0) for x in sizes]))
    st = jnp.stack(jnp.broadcast_arrays(*strides))
    m = members_in_domain(g, st, system, temperature, at)
    return [Group(g[i], m[i]) for i in range(len(sizes))]


def reduce_scatter_on(nbytes, grp: Group, system: System) -> Comm:
    """Hierarchical ring reduce-scatter (or all-gather) of ``nbytes`` over a placed group."""
    m, n = grp.in_domain, grp.size / grp.in_domain
    up = nbytes * (m - 1.0) / m
    out = (nbytes / m) * (n - 1.0) / n
    lat = _log2(m) * system.scale_up.latency_s + _log2(n) * system.scale_out.latency_s
    return Comm(up * _s_per_byte_up(system) + out * _s_per_byte_out(system) + lat, up, out)


def all_to_all_on(nbytes, grp: Group, system: System, temperature: float = 0.0) -> Comm:
    """All-to-all where each GPU sends ``nbytes`` spread evenly over a placed group."""
    f_up = (grp.in_domain - 1.0) / grp.size
    f_out = (grp.size - grp.in_domain) / grp.size
    up, out = nbytes * f_up, nbytes * f_out
    t_up = up * _s_per_byte_up(system)
    t_out = out * _s_per_byte_out(system)
    crosses = smooth.step(f_out, temperature)
    peers = (grp.size - grp.in_domain) * system.constants.a2a_peer_s
    lat = system.scale_up.latency_s + crosses * system.scale_out.latency_s + peers
    active = smooth.step(f_up + f_out, temperature)
    return Comm(active * (smooth.smax(t_up, t_out, temperature) + lat), up, out)


HIERARCHY_LEVELS = 7
"""Island sizes a hierarchical dispatcher may use: the domain's ``m`` members per group, or
``m / 2, m / 4, ...`` down to :data:`MIN_ISLAND` (:func:`hierarchical_dispatch`)."""

MIN_ISLAND = 8.0
"""Smallest NVLink island of a hierarchical dispatcher: DeepEP's kernels are built for up to
8 NVLink peers per node (``NUM_MAX_NVL_PEERS = 8``, deepseek-ai/DeepEP ``csrc/kernels/
configs.cuh``) and HybridEP splits a larger NVLink domain only into groups of whole 8-GPU
sets (``NUM_OF_HYBRID_EP_RANKS_PER_NVLINK_DOMAIN``); a domain of 8 or fewer is one island."""


def hierarchical_dispatch(token_bytes, top_k, grp: Group, system: System, max_domains=0.0,
                          temperature: float = 0.0) -> Comm:
    """EP dispatch (or combine) of DeepEP / HybridEP style
    (:func:`hierarchical_dispatch_islands`) on the best NVLink island size: the dispatcher
    treats ``m' = m / 2^j >= 8`` of a group's ``m`` in-domain members as one island
    (HybridEP's ``NUM_OF_HYBRID_EP_RANKS_PER_NVLINK_DOMAIN``,
    DeepEP's NVLink-domain size), and the fastest choice is taken.

    Why: forwarding through an entry GPU per remote island saves a scale-up copy each time the
    entry GPU is itself a destination, so islands twice as large move fewer bytes in all but
    more over the scale-up tier; where that tier binds (EP 16 on 8-GPU H800 nodes grown to
    16-GPU domains: +7% on the all-to-all) a larger domain would slow the step although the
    old islands remain available (issue 21). The minimum over island sizes is monotone in the
    domain: a domain twice as large keeps every island size of the smaller one (a domain
    1.5 times as large cuts power-of-two groups elsewhere: no such guarantee, nor is there one
    in the placement, :func:`members_in_domain`). Exact model: the argmin's time and bytes;
    relaxed model (continuous degrees, no island of its own): the whole domain as one
    island."""
    if not smooth.is_exact(temperature):
        return hierarchical_dispatch_islands(token_bytes, top_k, grp, system, max_domains,
                                             temperature)
    m = grp.in_domain
    floor = jnp.minimum(m, MIN_ISLAND)
    sizes = [m] + [jnp.maximum(m / 2.0 ** j, floor) for j in range(1, HIERARCHY_LEVELS)]
    levels = [hierarchical_dispatch_islands(token_bytes, top_k, Group(grp.size, size), system,
                                            max_domains, temperature)
              for size in sizes]
    best = levels[0]
    for c in levels[1:]:
        take = c.time < best.time
        best = Comm(*(jnp.where(take, getattr(c, f), getattr(best, f))
                      for f in ("time", "up_bytes", "out_bytes")))
    return best


def hierarchical_dispatch_islands(token_bytes, top_k, grp: Group, system: System,
                                  max_domains=0.0, temperature: float = 0.0) -> Comm:
    """EP dispatch (or combine) of DeepEP / HybridEP style with the group's domains as its
    NVLink islands (DeepEP's own configuration; :func:`hierarchical_dispatch` takes the best
    island size): each token crosses the scale-out
    network once per remote domain that holds one of its experts, and is forwarded over the
    scale-up network to the experts inside that domain (DeepEP README, "normal kernels ...
    forwarding from NVLink to RDMA"; DeepSeek-V3 report sec. 3.2.2).

    ``token_bytes`` is the buffer of this GPU's tokens (one copy each), ``top_k`` the routed
    copies per token (times the capacity factor). With the group over ``n = g / m`` domains
    and experts spread evenly, a token's ``k`` experts hit ``n (1 - (1 - 1/n)^k)`` distinct
    domains on average (balanced routing), at most ``max_domains`` with node-limited
    routing (DeepSeek-V3: 4); ``(n - 1) / n`` of them are remote. Scale-out bytes are
    ``token_bytes`` times the remote domains. Inside a domain a token moves once per
    destination GPU, not per expert (DeepEP sends one copy per rank holding any of its
    experts: ``is_token_in_rank``, ``num_tokens_per_rank``): of the ``G`` GPUs the token can
    reach (``g``, or the ``m max_domains`` GPUs of its domains under node-limited routing) its
    ``k`` experts hit ``G (1 - (1 - 1/G)^k)`` distinct ones, and each that is not the GPU
    holding the copy moves once over the scale-up tier: scale-up bytes
    ``token_bytes G (1 - (1 - 1/G)^k) (m - 1) / m``. The tiers run concurrently:
    ``max(t_up, t_out)`` plus one latency of each tier used, plus one message cost
    ``a2a_peer_s`` per remote RDMA peer (the same-index GPU of each of the ``n - 1`` other
    domains, DeepEP's normal kernels; module docstring). Checked against DeepEP's published
    normal-kernel benchmark (H800, EP 8-64): ``experiments/deepep_check.py``.
    """
    g, m = grp.size, grp.in_domain
    n = g / m
    k = jnp.maximum(top_k, 1.0)
    distinct = n * (1.0 - (1.0 - 1.0 / n) ** k)
    limited = smooth.smin(distinct, jnp.maximum(max_domains, 1.0), temperature)
    distinct = jnp.where(max_domains > 0, limited, distinct)
    # the scale-up copies per token grow with the island (fewer entry GPUs double as
    # destinations); a dispatcher that would be slowed by a larger island keeps the smaller
    # one (:func:`hierarchical_dispatch`), so in the exact model the island size is held
    # constant in this share for derivatives: d(time) / d(domain) comes from the scale-out
    # side only and is never > 0 (the relaxed model keeps every derivative)
    mu = jax.lax.stop_gradient(m) if smooth.is_exact(temperature) else m
    reach = jnp.where(max_domains > 0,
                      mu * smooth.smin(g / mu, jnp.maximum(max_domains, 1.0), temperature), g)
    gpus = reach * (1.0 - (1.0 - 1.0 / jnp.maximum(reach, 1.0)) ** k)
    out = token_bytes * distinct * (n - 1.0) / n
    up = token_bytes * gpus * (mu - 1.0) / mu
    t_up = up * _s_per_byte_up(system)
    t_out = out * _s_per_byte_out(system)
    crosses_out = smooth.step((g - m) / g, temperature)
    peers = (n - 1.0) * system.constants.a2a_peer_s
    lat = system.scale_up.latency_s + crosses_out * system.scale_out.latency_s + peers
    active = smooth.step((g - 1.0) / g, temperature)
    return Comm(active * (smooth.smax(t_up, t_out, temperature) + lat), up, out)


def crosses(grp: Group, temperature: float = 0.0):
    """1 when a ring/chain over the placed group leaves one domain, else 0."""
    return smooth.step((grp.size - grp.in_domain) / grp.size, temperature)


def reduce_scatter(nbytes, group, stride, system: System, temperature: float = 0.0) -> Comm:
    """Hierarchical ring reduce-scatter (or all-gather) of a ``nbytes`` tensor."""
    return reduce_scatter_on(nbytes, place([group], [stride], system, temperature)[0], system)


def all_gather(nbytes, group, stride, system: System, temperature: float = 0.0) -> Comm:
    """All-gather to a ``nbytes`` tensor: the same traffic as a reduce-scatter."""
    return reduce_scatter(nbytes, group, stride, system, temperature)


def all_reduce(nbytes, group, stride, system: System, temperature: float = 0.0) -> Comm:
    """Ring all-reduce = reduce-scatter + all-gather."""
    return 2.0 * reduce_scatter(nbytes, group, stride, system, temperature)


def all_to_all_split(group, stride, system: System, temperature: float = 0.0):
    """Fractions of an all-to-all buffer that go over scale-up and over scale-out.

    Returns ``((m - 1) / g, (g - m) / g)``; the rest, ``1/g``, stays on the GPU.
    """
    g = jnp.maximum(group, 1.0)
    m = members_in_domain(group, stride, system, temperature)
    return (m - 1.0) / g, (g - m) / g


def all_to_all(nbytes, group, stride, system: System, temperature: float = 0.0) -> Comm:
    """All-to-all where each GPU sends ``nbytes`` spread evenly over the group."""
    grp = place([group], [stride], system, temperature)[0]
    return all_to_all_on(nbytes, grp, system, temperature)


def crosses_domain(group, stride, system: System, temperature: float = 0.0):
    """1 when a ring/chain of ``group`` ranks ``stride`` apart leaves one domain, else 0."""
    return crosses(place([group], [stride], system, temperature)[0], temperature)


def p2p(nbytes, cross, system: System) -> Comm:
    """One point-to-point transfer of ``nbytes``; ``cross`` in [0, 1] selects the tier."""
    t_up = nbytes * _s_per_byte_up(system) + system.scale_up.latency_s
    t_out = nbytes * _s_per_byte_out(system) + system.scale_out.latency_s
    return Comm(t_up + cross * (t_out - t_up), nbytes * (1.0 - cross), nbytes * cross)
