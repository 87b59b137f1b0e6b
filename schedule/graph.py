"""Dependency graphs as integer arrays: nodes are 0..n-1, links are parallel `predecessors` / `successors` arrays.

Everything here is linear in nodes plus links (up to sorting): topological levels come from Kahn's algorithm taken
one whole frontier at a time with numpy, and only the few nodes that Kahn's algorithm cannot free (those on or
behind a cycle) ever reach the Python loop that finds strongly connected components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNREACHED = -1


@dataclass(frozen=True)
class Cycle:
    """The nodes of one strongly connected component, in order around it from its smallest node."""

    nodes: tuple[int, ...]


def topological_levels(node_count: int, predecessors: np.ndarray, successors: np.ndarray) -> np.ndarray:
    """Each node's level: 0 without predecessors, else one more than its highest predecessor's level.

    Nodes on a cycle, or reachable from one, are never freed and keep UNREACHED (-1).
    """
    level = np.full(node_count, UNREACHED, dtype=np.int64)
    indegree = np.bincount(successors, minlength=node_count)
    offsets, targets = _adjacency(node_count, predecessors, successors)
    frontier = np.flatnonzero(indegree == 0)
    depth = 0
    while frontier.size:
        level[frontier] = depth
        reached = targets[_ranges(offsets[frontier], offsets[frontier + 1])]
        if not reached.size:
            break
        reached, hits = np.unique(reached, return_counts=True)
        indegree[reached] -= hits
        frontier = reached[indegree[reached] == 0]
        depth += 1
    return level


def find_cycles(
    node_count: int, predecessors: np.ndarray, successors: np.ndarray, level: np.ndarray
) -> list[Cycle]:
    """The cycles of the graph: every strongly connected component of two or more nodes, and every node that
    depends on itself. `level` is `topological_levels` of the same graph; only its unreached nodes are searched."""
    unreached = level == UNREACHED
    if not unreached.any():
        return []
    inside = unreached[predecessors] & unreached[successors]
    pred, succ = predecessors[inside], successors[inside]
    # Of the unreached nodes, those that reach no cycle peel off from the end, as Kahn's algorithm run backwards.
    reaches_cycle = topological_levels(node_count, succ, pred) == UNREACHED
    core = unreached & reaches_cycle
    kept = core[pred] & core[succ]
    pred, succ = pred[kept], succ[kept]
    components = _strongly_connected(node_count, np.flatnonzero(core), pred, succ)
    self_loops = set(pred[pred == succ].tolist())
    offsets, targets = _adjacency(node_count, pred, succ)
    cycles = []
    for members in components:
        if len(members) > 1 or members[0] in self_loops:
            cycles.append(Cycle(_around(members, offsets, targets)))
    return sorted(cycles, key=lambda cycle: cycle.nodes[0])


def links_inside(
    cycles: list[Cycle], node_count: int, predecessors: np.ndarray, successors: np.ndarray
) -> np.ndarray:
    """A mask of the links whose both ends lie in the same cycle: dropping them breaks every cycle."""
    component = np.full(node_count, UNREACHED, dtype=np.int64)
    for number, cycle in enumerate(cycles):
        component[list(cycle.nodes)] = number
    return (component[predecessors] != UNREACHED) & (component[predecessors] == component[successors])


def level_bounds(sorted_levels: np.ndarray, level_count: int) -> np.ndarray:
    """Where each level starts in an array sorted by level, plus the end: level k is [bounds[k], bounds[k+1])."""
    return np.searchsorted(sorted_levels, np.arange(level_count + 1), side="left")


def pair_order(major: np.ndarray, minor: np.ndarray, minor_count: int) -> np.ndarray:
    """An order that sorts pairs by `major` then `minor` (both non-negative, minor below minor_count), from one
    argsort of a combined key (much cheaper than np.lexsort); equal pairs come in any order."""
    if not major.size:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(major.astype(np.int64) * max(minor_count, 1) + minor)


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """The index where each run of equal keys starts, in an array sorted by key."""
    if not sorted_keys.size:
        return np.zeros(0, dtype=np.int64)
    change = np.empty(sorted_keys.size, dtype=bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def _adjacency(
    node_count: int, predecessors: np.ndarray, successors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compressed rows: the successors of node i are targets[offsets[i]:offsets[i+1]], in ascending order."""
    order = pair_order(predecessors, successors, node_count)
    offsets = np.zeros(node_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(predecessors, minlength=node_count), out=offsets[1:])
    return offsets, successors[order]


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, stop) for every pair, without a Python loop."""
    counts = stops - starts
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.arange(total, dtype=np.int64) + shift


def _strongly_connected(
    node_count: int, nodes: np.ndarray, predecessors: np.ndarray, successors: np.ndarray
) -> list[list[int]]:
    """Tarjan's algorithm, iterative (a million-node chain must not hit the recursion limit); components
    come out with their members sorted."""
    offsets, targets = _adjacency(node_count, predecessors, successors)
    offsets_list, targets_list = offsets.tolist(), targets.tolist()
    index: dict[int, int] = {}
    lowlink: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    for root in nodes.tolist():
        if root in index:
            continue
        work = [(root, offsets_list[root])]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, position = work[-1]
            if position < offsets_list[node + 1]:
                work[-1] = (node, position + 1)
                target = targets_list[position]
                if target not in index:
                    index[target] = lowlink[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, offsets_list[target]))
                elif target in on_stack:
                    lowlink[node] = min(lowlink[node], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                components.append(sorted(members))
    return components


def _around(members: list[int], offsets: np.ndarray, targets: np.ndarray) -> tuple[int, ...]:
    """The members in the order a walk meets them from the smallest, following the smallest unvisited successor
    first: for a simple cycle, the order around it."""
    inside = set(members)
    seen = {members[0]}
    order = []
    pending = [members[0]]
    while pending:
        node = pending.pop()
        order.append(node)
        following = [
            t for t in targets[offsets[node] : offsets[node + 1]].tolist() if t in inside and t not in seen
        ]
        for target in reversed(following):
            seen.add(target)
        pending.extend(reversed(following))
    return tuple(order)
