"""`grar judge ...`: serve, score, validate and import-rar.

Imports happen inside each command, so `grar judge score` starts fast and
works without jax.
"""

from orchestrator import devices


def _judge_serve(args) -> int:
  from judge_server import __main__ as judge_main
  from judge_server import config as judge_config
  return judge_main.serve(judge_config.load(args.config, args.set))


def _channel(args):
  """The connection flags of _channel_flags as a ChannelConfig."""
  from orchestrator.judge import channel as judge_channel
  return judge_channel.ChannelConfig(
      token_file=args.token_file, tls=args.tls, ca_file=args.ca_file,
      cert_file=args.cert_file, key_file=args.key_file,
      server_name=args.server_name)


def _judge_score(args) -> int:
  from orchestrator.judge import score as judge_cli
  return judge_cli.score_file(args.target, args.input, channel=_channel(args))


def _judge_validate(args) -> int:
  judge_cfg = None
  if args.config:
    from judge_server import config as judge_config
    judge_cfg = judge_config.load(args.config, args.set)
    if judge_cfg.backend.kind == "jax":
      devices.ask_cpu_devices(judge_cfg.backend.mesh.size)
  elif args.set:
    raise ValueError("--set: overrides fields of --config; with --target "
                     "the judge's config is the server's")
  from orchestrator.judge import validate as judge_validate
  return judge_validate.command(
      target=args.target, judge_config=judge_cfg, channel=_channel(args),
      data=args.data, probes=args.probes, n=args.n, seed=args.seed,
      aggregation=args.aggregation, as_json=args.json)


def _judge_import_rar(args) -> int:
  from judge_server import rar
  if (args.out is None) == (args.dataset is None):
    raise ValueError("import-rar: give --out PACK.yaml (one rubric) or "
                     "--dataset DATA.jsonl (rows with their rubrics)")
  if args.out is not None:
    if not args.id:
      raise ValueError("import-rar: --id: required with --out")
    print(rar.import_pack(args.input, args.out, args.id, args.version,
                          args.description))
  else:
    print(rar.import_dataset(args.input, args.dataset, args.id_prefix,
                             args.domain))
  return 0


def add(sub, with_config) -> None:
  """The `judge` command group on the `grar` parser's subparsers."""
  judge = sub.add_parser("judge", help="the judge service").add_subparsers(
      dest="judge_command", required=True)
  serve = judge.add_parser("serve", help="run the judge server")
  with_config(serve, required=False)
  serve.set_defaults(func=_judge_serve)

  def channel_flags(sp):
    sp.add_argument("--token-file", default="",
                    help="file whose first line is the judge's bearer token")
    sp.add_argument("--tls", action="store_true",
                    help="TLS with the CAs gRPC ships")
    sp.add_argument("--ca-file", default="",
                    help="TLS, trusting this CA for the judge's certificate")
    sp.add_argument("--cert-file", default="",
                    help="client certificate (mutual TLS), with --key-file")
    sp.add_argument("--key-file", default="", help="client key")
    sp.add_argument("--server-name", default="",
                    help="name to check the judge's certificate against")

  score = judge.add_parser("score", help="score a JSONL file of rollouts")
  score.add_argument("--target", required=True, help="HOST:PORT")
  score.add_argument("--input", required=True, help="rollouts JSONL")
  channel_flags(score)
  score.set_defaults(func=_judge_score)
  val = judge.add_parser(
      "validate", help="probe a judge: does it score a correct answer above "
      "a wrong one, off-topic text, padding, no answer, an injection?")
  where = val.add_mutually_exclusive_group(required=True)
  where.add_argument("--target", help="HOST:PORT of a running judge server")
  where.add_argument("--config", metavar="JUDGE.yaml",
                     help="a judge server config: that judge, started in "
                     "this process")
  val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of --config")
  rows = val.add_mutually_exclusive_group()
  rows.add_argument("--data", metavar="DATASET.jsonl",
                    help="dataset rows (prompt, answer, rubric): probes are "
                    "built from --n of them")
  rows.add_argument("--probes", metavar="PROBES.jsonl",
                    help="your own probes, every row: {prompt, reference?, "
                    "completion, label: 0|1}, {prompt, reference?, better, "
                    "worse} or {prompt, reference?, correct, wrong, "
                    "off_topic, domain?}; default (neither --data nor "
                    "--probes): the shipped held-out probe set")
  val.add_argument("--n", type=int,
                   help="rows to probe, a seeded choice (default: 50 of "
                   "--data, every probe)")
  val.add_argument("--seed", type=int, default=0,
                   help="which rows, and the probes' wrong answers")
  val.add_argument("--aggregation", choices=["explicit", "implicit"],
                   help="default: the judge's")
  val.add_argument("--json", action="store_true",
                   help="one JSON object on stdout instead of the table")
  channel_flags(val)
  val.set_defaults(func=_judge_validate)
  rar = judge.add_parser(
      "import-rar", help="convert Rubrics-as-Rewards rubrics to a rubric "
      "pack or to dataset rows (docs/rubrics.md)")
  rar.add_argument("input", metavar="IN", help="JSON or JSONL: RaR rubric "
                   "items, one RaR row, or RaR rows (with --dataset)")
  rar.add_argument("--out", metavar="PACK.yaml", help="write one rubric pack")
  rar.add_argument("--id", help="the pack's id (with --out)")
  rar.add_argument("--version", type=int, default=1,
                   help="the pack's version (with --out)")
  rar.add_argument("--description", default="",
                   help="the pack's description (with --out)")
  rar.add_argument("--dataset", metavar="DATA.jsonl",
                   help="write dataset rows with their rubrics inline")
  rar.add_argument("--id-prefix", default="rar",
                   help="row ids for rows without one: PREFIX-N")
  rar.add_argument("--domain", default="", help="the rows' domain")
  rar.set_defaults(func=_judge_import_rar)
