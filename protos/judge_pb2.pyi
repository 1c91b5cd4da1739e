from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Category(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATEGORY_UNSPECIFIED: _ClassVar[Category]
    ESSENTIAL: _ClassVar[Category]
    IMPORTANT: _ClassVar[Category]
    OPTIONAL: _ClassVar[Category]
    PITFALL: _ClassVar[Category]

class Polarity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLARITY_UNSPECIFIED: _ClassVar[Polarity]
    POSITIVE: _ClassVar[Polarity]
    NEGATIVE: _ClassVar[Polarity]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    EXPLICIT: _ClassVar[Aggregation]
    IMPLICIT: _ClassVar[Aggregation]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    SCORED: _ClassVar[Status]
    UNSCORABLE: _ClassVar[Status]
CATEGORY_UNSPECIFIED: Category
ESSENTIAL: Category
IMPORTANT: Category
OPTIONAL: Category
PITFALL: Category
POLARITY_UNSPECIFIED: Polarity
POSITIVE: Polarity
NEGATIVE: Polarity
AGGREGATION_UNSPECIFIED: Aggregation
EXPLICIT: Aggregation
IMPLICIT: Aggregation
STATUS_UNSPECIFIED: Status
SCORED: Status
UNSCORABLE: Status

class Criterion(_message.Message):
    __slots__ = ("text", "category", "weight", "polarity")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POLARITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    category: Category
    weight: float
    polarity: Polarity
    def __init__(self, text: _Optional[str] = ..., category: _Optional[_Union[Category, str]] = ..., weight: _Optional[float] = ..., polarity: _Optional[_Union[Polarity, str]] = ...) -> None: ...

class Rubric(_message.Message):
    __slots__ = ("criteria",)
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    criteria: _containers.RepeatedCompositeFieldContainer[Criterion]
    def __init__(self, criteria: _Optional[_Iterable[_Union[Criterion, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("rollout_id", "prompt", "completion", "reference_answer", "rubric", "rubric_id", "aggregation")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    RUBRIC_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    prompt: str
    completion: str
    reference_answer: str
    rubric: Rubric
    rubric_id: str
    aggregation: Aggregation
    def __init__(self, rollout_id: _Optional[str] = ..., prompt: _Optional[str] = ..., completion: _Optional[str] = ..., reference_answer: _Optional[str] = ..., rubric: _Optional[_Union[Rubric, _Mapping]] = ..., rubric_id: _Optional[str] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ...) -> None: ...

class CriterionScore(_message.Message):
    __slots__ = ("index", "score", "score_mass", "method")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORE_MASS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    score_mass: float
    method: str
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., score_mass: _Optional[float] = ..., method: _Optional[str] = ...) -> None: ...

class ScoreResult(_message.Message):
    __slots__ = ("rollout_id", "status", "reward", "criteria", "reason", "latency_ms")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    status: Status
    reward: float
    criteria: _containers.RepeatedCompositeFieldContainer[CriterionScore]
    reason: str
    latency_ms: float
    def __init__(self, rollout_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., reward: _Optional[float] = ..., criteria: _Optional[_Iterable[_Union[CriterionScore, _Mapping]]] = ..., reason: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoreResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoreResult, _Mapping]]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RubricInfo(_message.Message):
    __slots__ = ("id", "version", "num_criteria")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    num_criteria: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., num_criteria: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch", "max_prompt_chars", "max_completion_chars", "max_criteria", "max_requests_per_batch_call", "max_reference_chars", "max_rollout_id_chars", "max_message_bytes", "max_concurrent_streams", "max_queue_depth", "retry_after_ms", "max_calls_in_flight", "openrlhf_max_body_bytes", "openrlhf_max_connections", "openrlhf_max_requests_per_connection", "openrlhf_header_deadline_s", "openrlhf_keepalive_timeout_s", "max_logprob_tokens")
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPLETION_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CRITERIA_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_PER_BATCH_CALL_FIELD_NUMBER: _ClassVar[int]
    MAX_REFERENCE_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROLLOUT_ID_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    OPENRLHF_MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPENRLHF_MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    OPENRLHF_MAX_REQUESTS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    OPENRLHF_HEADER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    OPENRLHF_KEEPALIVE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_LOGPROB_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_batch: int
    max_prompt_chars: int
    max_completion_chars: int
    max_criteria: int
    max_requests_per_batch_call: int
    max_reference_chars: int
    max_rollout_id_chars: int
    max_message_bytes: int
    max_concurrent_streams: int
    max_queue_depth: int
    retry_after_ms: int
    max_calls_in_flight: int
    openrlhf_max_body_bytes: int
    openrlhf_max_connections: int
    openrlhf_max_requests_per_connection: int
    openrlhf_header_deadline_s: float
    openrlhf_keepalive_timeout_s: float
    max_logprob_tokens: int
    def __init__(self, max_batch: _Optional[int] = ..., max_prompt_chars: _Optional[int] = ..., max_completion_chars: _Optional[int] = ..., max_criteria: _Optional[int] = ..., max_requests_per_batch_call: _Optional[int] = ..., max_reference_chars: _Optional[int] = ..., max_rollout_id_chars: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_concurrent_streams: _Optional[int] = ..., max_queue_depth: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., max_calls_in_flight: _Optional[int] = ..., openrlhf_max_body_bytes: _Optional[int] = ..., openrlhf_max_connections: _Optional[int] = ..., openrlhf_max_requests_per_connection: _Optional[int] = ..., openrlhf_header_deadline_s: _Optional[float] = ..., openrlhf_keepalive_timeout_s: _Optional[float] = ..., max_logprob_tokens: _Optional[int] = ...) -> None: ...

class TokenizerInfo(_message.Message):
    __slots__ = ("vocab_size", "fingerprint", "error")
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    vocab_size: int
    fingerprint: str
    error: str
    def __init__(self, vocab_size: _Optional[int] = ..., fingerprint: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("backend", "model", "rubrics", "limits", "default_aggregation", "tokenizer")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUBRICS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    rubrics: _containers.RepeatedCompositeFieldContainer[RubricInfo]
    limits: Limits
    default_aggregation: Aggregation
    tokenizer: TokenizerInfo
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., rubrics: _Optional[_Iterable[_Union[RubricInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., default_aggregation: _Optional[_Union[Aggregation, str]] = ..., tokenizer: _Optional[_Union[TokenizerInfo, _Mapping]] = ...) -> None: ...

class LogprobsRequest(_message.Message):
    __slots__ = ("rollout_id", "prompt_tokens", "completion_tokens")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    prompt_tokens: _containers.RepeatedScalarFieldContainer[int]
    completion_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rollout_id: _Optional[str] = ..., prompt_tokens: _Optional[_Iterable[int]] = ..., completion_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class LogprobsResult(_message.Message):
    __slots__ = ("rollout_id", "status", "logprobs", "reason", "latency_ms")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    status: Status
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    reason: str
    latency_ms: float
    def __init__(self, rollout_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., logprobs: _Optional[_Iterable[float]] = ..., reason: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...
