"""The trainer's side of the judge: the gRPC client and channel, a pool over
replicas, the judge launched as a subprocess or as Ray replicas, the
`grar judge score` and `grar judge validate` commands, and the watch on a
judge that stops answering."""
