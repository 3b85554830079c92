# @summary A node's recipient in publisher.yaml: the `age1…` line `certsync
#   keygen node` printed, or the node's SSH host public key (`ssh-ed25519 AAAA…`
#   or `ssh-rsa AAAA…`, a trailing comment allowed).
type Certsync::Recipient = Variant[
  Pattern[/\Aage1[02-9ac-hj-np-z]{58}\z/],
  Pattern[/\A(ssh-ed25519|ssh-rsa) [A-Za-z0-9+\/]+={0,2}( [^\x00-\x1f\x7f]*)?\z/],
]
