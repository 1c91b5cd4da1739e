"""Several judge replicas behind one client.

Each batch is spread over the live replicas, each rollout to the one with
the fewest requests outstanding. A replica that cannot be reached (it died,
its stream broke) is health-checked at once, not retried for the whole
deadline; if it is gone, it is taken out of the pool, and its unanswered
rollouts go to the others in either case. Results are
keyed by rollout id and each is taken from the one answer that came back, so
nothing is lost or counted twice; a rollout no replica answers by the
deadline is UNSCORABLE with the reason, as with one judge.
"""

import concurrent.futures
import dataclasses
import sys
import threading

from orchestrator.judge import channel as judge_channel
from orchestrator.judge.client import UNAVAILABLE, JudgeClient
from protos import judge_pb2

_HEALTH_CHECK_S = 5.0


@dataclasses.dataclass(eq=False)
class _Replica:
  client: JudgeClient
  outstanding: int = 0
  alive: bool = True


def _answered(result: judge_pb2.ScoreResult) -> bool:
  return not (result.status == judge_pb2.UNSCORABLE
              and result.reason.startswith(UNAVAILABLE))


class JudgePool:
  """JudgeClient's interface over replicas at `targets`; thread-safe."""

  def __init__(self, targets: list[str], timeout_s: float,
               connection: judge_channel.ChannelConfig = (
                   judge_channel.ChannelConfig())):
    """timeout_s: the deadline of each replica's share of a batch."""
    self.target = ",".join(targets)
    self._timeout_s = timeout_s
    self._replicas = [
        _Replica(JudgeClient(t, timeout_s, connection,
                             retry_unreachable=False))
        for t in targets]
    self._lock = threading.Lock()
    self._resends = 0

  @property
  def retries(self) -> int:
    """Streams re-opened within a replica plus shares re-sent to others."""
    return self._resends + sum(r.client.retries for r in self._replicas)

  def _assign(self, requests) -> dict[_Replica, list]:
    with self._lock:
      live = [r for r in self._replicas if r.alive]
      shares: dict[_Replica, list] = {}
      for request in requests if live else ():
        replica = min(live, key=lambda r: r.outstanding)
        replica.outstanding += 1
        shares.setdefault(replica, []).append(request)
      return shares

  def _send(self, replica: _Replica, share: list) -> dict:
    try:
      return replica.client.score(share)
    finally:
      with self._lock:
        replica.outstanding -= len(share)

  def _check(self, replica: _Replica) -> None:
    try:
      replica.client.wait_ready(_HEALTH_CHECK_S)
    except TimeoutError as e:
      with self._lock:
        if not replica.alive:
          return
        replica.alive = False
      print(f"grar: judge replica lost, its rollouts go to the others: {e}",
            file=sys.stderr, flush=True)

  def score(self, requests: list[judge_pb2.ScoreRequest]
            ) -> dict[str, judge_pb2.ScoreResult]:
    """One result per request, by rollout_id, as JudgeClient.score."""
    ids = [r.rollout_id for r in requests]
    if len(set(ids)) != len(ids):
      raise ValueError("rollout ids must be unique within one score() call")
    resends = judge_channel.Resends(self._timeout_s)
    results: dict[str, judge_pb2.ScoreResult] = {}
    pending = list(requests)
    why = f"{UNAVAILABLE}no judge replica is alive"
    first = True
    while pending and resends.left() > 0 and any(
        r.alive for r in self._replicas):
      if not first:
        # In case what failed was not the replica but the network.
        with self._lock:
          self._resends += 1
        resends.pause()
      first = False
      shares = self._assign(pending)
      if not shares:  # the last replica was lost by another call meanwhile
        break
      with concurrent.futures.ThreadPoolExecutor(len(shares)) as threads:
        answers = {replica: threads.submit(self._send, replica, share)
                   for replica, share in shares.items()}
      pending = []
      for replica, future in answers.items():
        unanswered = []
        for request in shares[replica]:
          result = future.result()[request.rollout_id]
          if _answered(result):
            results[request.rollout_id] = result
          else:
            unanswered.append(request)
            why = result.reason
        if unanswered:
          self._check(replica)
          pending += unanswered
    for request in pending:
      results[request.rollout_id] = judge_pb2.ScoreResult(
          rollout_id=request.rollout_id, status=judge_pb2.UNSCORABLE,
          reason=why)
    return {i: results[i] for i in ids}

  def wait_ready(self, timeout_s: float) -> None:
    for replica in self._replicas:
      replica.client.wait_ready(timeout_s)

  def close(self) -> None:
    for replica in self._replicas:
      replica.client.close()

  def __enter__(self) -> "JudgePool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
