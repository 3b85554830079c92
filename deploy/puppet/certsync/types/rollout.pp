# @summary A staged rollout policy, publisher.yaml's `rollout:` (the default
#   for every certificate) or a certificate's own, under publisher.yaml's key
#   names.
#
# `canary` names the nodes that install first, or gives them as a percentage
# of the certificate's nodes (rounded up); none: the first wave starts at
# once. `waves` are cumulative percentages of the other nodes, growing, the
# last `100%` (certsync's default `["100%"]`). `soak` (default 10m, `0s`
# none) and `wave_deadline` (default 1h, positive) are Go durations.
# `max_failures` is a number of failed nodes tolerated, or a percentage of
# those released (default 0). What a type cannot say (waves growing to 100%,
# a positive wave_deadline, canaries that are configured nodes) is checked
# by certsync::check_rollout.
type Certsync::Rollout = Struct[{
  Optional[canary]        => Variant[Array[Certsync::Nodename, 1], Certsync::Percent],
  Optional[waves]         => Array[Certsync::Percent, 1],
  Optional[soak]          => Certsync::Duration,
  Optional[wave_deadline] => Certsync::Duration,
  Optional[max_failures]  => Variant[Integer[0, 1000000], Certsync::Percent],
}]
