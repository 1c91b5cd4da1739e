"""Several judge replicas behind one client.

Each batch is spread over the live replicas, each rollout to the one with
the fewest requests outstanding. A replica that cannot be reached (it died,
its stream broke) is health-checked at once, not retried for the whole
deadline; if it is gone, it takes no work until it comes back (Ray
restarts it on a new port, which `locate` finds), and its unanswered
rollouts go to the others in either case; with every replica gone, a call
waits within its deadline for one to come back. Results are
keyed by rollout id and each is taken from the one answer that came back, so
nothing is lost or counted twice; a rollout no replica answers by the
deadline is UNSCORABLE with the reason, as with one judge.
"""

import concurrent.futures
import dataclasses
import sys
import threading
from typing import Callable

from orchestrator.judge import channel as judge_channel
from orchestrator.judge.client import UNAVAILABLE, JudgeClient
from protos import judge_pb2

_HEALTH_CHECK_S = 5.0
# How often a lost replica is looked for, and how long one look may take:
# a restart takes seconds.
_LOCATE_EVERY_S = 1.0


@dataclasses.dataclass(eq=False)
class _Replica:
  index: int
  client: JudgeClient
  outstanding: int = 0
  alive: bool = True


def _answered(result: judge_pb2.ScoreResult | judge_pb2.LogprobsResult
              ) -> bool:
  return not (result.status == judge_pb2.UNSCORABLE
              and result.reason.startswith(UNAVAILABLE))


class JudgePool:
  """JudgeClient's interface over replicas at `targets`; thread-safe."""

  def __init__(self, targets: list[str], timeout_s: float,
               connection: judge_channel.ChannelConfig = (
                   judge_channel.ChannelConfig()),
               locate: Callable[[int, float], str | None] | None = None):
    """timeout_s: the deadline of each replica's share of a batch.
    locate(i, timeout_s): where replica i (of targets) serves now, None
    while it has nowhere; without it, a lost replica never comes back."""
    self._timeout_s = timeout_s
    self._connection = connection
    self._locate = locate
    self._replicas = [_Replica(i, self._client(t))
                      for i, t in enumerate(targets)]
    self._lock = threading.Lock()
    # Notified when a lost replica is back, and when the pool closes.
    self._changed = threading.Condition(self._lock)
    self._closed = threading.Event()
    self._rejoins: list[threading.Thread] = []
    # Lost replicas' clients, closed with the pool: a call may still be
    # sending by one (its answers then come back unanswered, and re-sent).
    self._retired: list[JudgeClient] = []
    self._resends = 0

  def _client(self, target: str) -> JudgeClient:
    return JudgeClient(target, self._timeout_s, self._connection,
                       retry_unreachable=False)

  @property
  def target(self) -> str:
    with self._lock:
      return ",".join(r.client.target for r in self._replicas)

  @property
  def retries(self) -> int:
    """Streams re-opened within a replica plus shares re-sent to others."""
    with self._lock:  # a replica coming back hands its count to _resends
      return self._resends + sum(r.client.retries for r in self._replicas)

  def _assign(self, requests, resends: judge_channel.Resends
              ) -> dict[_Replica, tuple[JudgeClient, list]]:
    """Each live replica's share, with the client it is sent by: a replica
    lost meanwhile may be given another client by _rejoin."""
    with self._lock:
      if self._locate:
        self._changed.wait_for(
            lambda: self._closed.is_set() or any(
                r.alive for r in self._replicas),
            timeout=max(resends.left(), 0))
      live = [r for r in self._replicas
              if r.alive and not self._closed.is_set()]
      shares: dict[_Replica, tuple[JudgeClient, list]] = {}
      for request in requests if live else ():
        replica = min(live, key=lambda r: r.outstanding)
        replica.outstanding += 1
        shares.setdefault(replica, (replica.client, []))[1].append(request)
      return shares

  def _send(self, method: str, replica: _Replica, client: JudgeClient,
            share: list) -> dict:
    try:
      return getattr(client, method)(share)
    finally:
      with self._lock:
        replica.outstanding -= len(share)

  def _check(self, replica: _Replica, client: JudgeClient) -> None:
    """Takes the replica out of the pool if `client`, the one that failed,
    is still its client and does not answer a health check."""
    try:
      client.wait_ready(_HEALTH_CHECK_S)
    except TimeoutError as e:
      with self._lock:
        if (not replica.alive or replica.client is not client
            or self._closed.is_set()):
          return
        replica.alive = False
        if self._locate:
          rejoin = threading.Thread(
              target=self._rejoin, args=(replica,), daemon=True,
              name=f"judge-replica-{replica.index}-rejoin")
          self._rejoins.append(rejoin)
          rejoin.start()
      print(f"grar: judge replica {replica.index} lost, its rollouts go to "
            f"the others: {e}", file=sys.stderr, flush=True)

  def _rejoin(self, replica: _Replica) -> None:
    """Until the pool closes: looks for the lost replica; once it serves
    where it is found, it takes work again."""
    while not self._closed.wait(_LOCATE_EVERY_S):
      target = self._locate(replica.index, _LOCATE_EVERY_S)
      if target is None:
        continue
      client = self._client(target)
      try:
        client.wait_ready(_HEALTH_CHECK_S)
      except TimeoutError:
        client.close()
        continue
      with self._lock:
        if not self._closed.is_set():
          self._retired.append(replica.client)
          self._resends += replica.client.retries
          replica.client = client
          replica.alive = True
          # Said before a waiting call goes on, so it comes before the
          # answers it gets.
          print(f"grar: judge replica {replica.index} back at {target}",
                file=sys.stderr, flush=True)
          self._changed.notify_all()
          return
      client.close()  # the pool closed meanwhile
      return

  def score(self, requests: list[judge_pb2.ScoreRequest]
            ) -> dict[str, judge_pb2.ScoreResult]:
    """One result per request, by rollout_id, as JudgeClient.score."""
    return self._spread("score", requests, judge_pb2.ScoreResult)

  def token_logprobs(self, requests: list[judge_pb2.LogprobsRequest]
                     ) -> dict[str, judge_pb2.LogprobsResult]:
    """The teacher's log-probs, as JudgeClient.token_logprobs, spread over
    the replicas as scores are."""
    return self._spread("token_logprobs", requests, judge_pb2.LogprobsResult)

  def check_tokenizer(self, tokenizer) -> None:
    """JudgeClient.check_tokenizer of every live replica."""
    with self._lock:
      clients = [r.client for r in self._replicas if r.alive]
    for client in clients:
      client.check_tokenizer(tokenizer)

  def _spread(self, method: str, requests: list, result_type) -> dict:
    ids = [r.rollout_id for r in requests]
    if len(set(ids)) != len(ids):
      raise ValueError("rollout ids must be unique within one call")
    resends = judge_channel.Resends(self._timeout_s)
    results: dict[str, judge_pb2.ScoreResult] = {}
    pending = list(requests)
    why = f"{UNAVAILABLE}no judge replica is alive"
    first = True
    # With locate, a call with every replica lost waits for one to be back.
    while pending and resends.left() > 0 and (
        self._locate or any(r.alive for r in self._replicas)):
      if not first:
        # In case what failed was not the replica but the network.
        with self._lock:
          self._resends += 1
        resends.pause()
      first = False
      shares = self._assign(pending, resends)
      if not shares:  # the last replica lost meanwhile, or none back in time
        break
      with concurrent.futures.ThreadPoolExecutor(len(shares)) as threads:
        answers = {replica: threads.submit(self._send, method, replica,
                                           *sent)
                   for replica, sent in shares.items()}
      pending = []
      for replica, future in answers.items():
        client, share = shares[replica]
        unanswered = []
        for request in share:
          result = future.result()[request.rollout_id]
          if _answered(result):
            results[request.rollout_id] = result
          else:
            unanswered.append(request)
            why = result.reason
        if unanswered:
          self._check(replica, client)
          pending += unanswered
    for request in pending:
      results[request.rollout_id] = result_type(
          rollout_id=request.rollout_id, status=judge_pb2.UNSCORABLE,
          reason=why)
    return {i: results[i] for i in ids}

  def wait_ready(self, timeout_s: float) -> None:
    for replica in self._replicas:
      replica.client.wait_ready(timeout_s)

  def close(self) -> None:
    with self._lock:
      self._closed.set()
      self._changed.notify_all()
    # No thread looks for a replica (ray.get) once the pool is closed.
    for rejoin in self._rejoins:
      rejoin.join()
    for client in self._retired + [r.client for r in self._replicas]:
      client.close()

  def __enter__(self) -> "JudgePool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
