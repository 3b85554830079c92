# @summary A certificate's entry in publisher.yaml: the names of the nodes
#   that get it, or a hash of those nodes and the certificate's own rollout
#   policy.
#
# `{nodes => [...], rollout => {...}}` replaces certsync::publisher's
# `rollout` whole for this certificate; `rollout => 'none'` turns it off (the
# certificate goes into service at once); a hash without `rollout` is the
# same as the node list alone.
type Certsync::Publication = Variant[
  Array[Certsync::Nodename, 1],
  Struct[{
    nodes             => Array[Certsync::Nodename, 1],
    Optional[rollout] => Variant[Certsync::Rollout, Enum['none']],
  }],
]
