# @summary The management host's publishing side: publisher.yaml, the signing
#   key, certbot's deploy hook and the republish timer.
#
# Writes `<config_dir>/publisher.yaml` (0600) from its parameters; creates the
# signing key with `certsync keygen signing --out` only when it is missing,
# so an existing key is always kept (the public line it prints, for the
# nodes' trusted_publishers, shows in Puppet's report); installs certbot's
# deploy hook as `<hook_dir>/certsync`, which runs `certsync publish` after
# every renewal; installs `certsync-republish.service` and `.timer` exactly
# as shipped in deploy/systemd, with a drop-in
# (`certsync-republish.service.d/puppet.conf`) naming binary_path and
# publisher.yaml, and runs the timer unless `manage_service` is false.
#
# Checked before anything is written: every node a certificate lists is under
# `nodes`, and no two nodes share a recipient.
#
# @param nats
#   publisher.yaml's `nats:` section: `url` and the publisher's credential
#   (`nkey:` from `certsync auth`, `creds:`, or `user`/`password`), `tls:`.
# @param nodes
#   Node name -> recipient: the `age1…` line `certsync keygen node` printed
#   (Puppet's report of certsync::node shows it), or the node's
#   `ssh-ed25519 …` host key.
# @param certificates
#   Certificate (certbot lineage) name -> the names of the nodes that get it.
# @param manage_signing_key
#   Create the signing key when missing. false: the key is put there by other
#   means (it is never replaced either way).
# @param hook_dir
#   certbot's deploy hook folder; certbot creates it. The hook is
#   `<hook_dir>/certsync`, mode 0755.
# @param manage_service
#   Run and enable `certsync-republish.timer`. false leaves it alone.
# @param signing_key
#   The signing key's path; `<config_dir>/signing.key` when undef.
# @param lineages
#   Where republish finds each certificate's lineage; certsync's default
#   (`/etc/letsencrypt/live`) when undef.
# @param stream
#   publisher.yaml's `stream:` (replicas 1..5, history 1..100,
#   duplicate_window); certsync's defaults when undef.
# @param timeout
#   How long publish keeps trying to reach NATS; certsync's default (30s)
#   when undef.
#
# @example Hiera
#   certsync::binary_source: 'puppet:///modules/profile/certsync'
#   certsync::publisher::nats:
#     url: 'tls://mgmt.example.net:4222'
#     nkey: '/etc/certsync/nats-auth/publisher.nk'
#     tls: {ca: '/etc/certsync/ca.pem'}
#   certsync::publisher::nodes:
#     web1: 'age1…'
#     web2: 'ssh-ed25519 AAAA…'
#   certsync::publisher::certificates:
#     example.com: [web1, web2]
class certsync::publisher (
  Certsync::Nats                                                   $nats,
  Hash[Certsync::Nodename, Certsync::Recipient, 1]                 $nodes,
  Hash[Certsync::Certname, Array[Certsync::Nodename, 1], 1]        $certificates,
  Boolean                                                          $manage_signing_key,
  Certsync::Absolutepath                                           $hook_dir,
  Boolean                                                          $manage_service,
  Optional[Certsync::Absolutepath]                                 $signing_key = undef,
  Optional[Certsync::Absolutepath]                                 $lineages    = undef,
  Optional[Struct[{
    Optional[replicas]         => Integer[1, 5],
    Optional[history]          => Integer[1, 100],
    Optional[duplicate_window] => Certsync::Duration,
  }]]                                                              $stream      = undef,
  Optional[Certsync::Duration]                                     $timeout     = undef,
) {
  contain certsync
  $binary_path = $certsync::binary_path
  $config_dir = $certsync::config_dir
  $unit_dir = $certsync::unit_dir

  $certificates.each |$cert, $members| {
    $members.each |$member| {
      unless $member in $nodes {
        fail("certsync: certificate \"${cert}\": node \"${member}\" is not listed in certsync::publisher's nodes")
      }
    }
    if length($members.unique) != length($members) {
      fail("certsync: certificate \"${cert}\": a node is listed twice")
    }
  }
  # A recipient without its SSH comment: two nodes may not share one.
  $keys = $nodes.map |$node, $recipient| { $recipient.split(' ')[0, 2].join(' ') }
  if length($keys.unique) != length($keys) {
    fail('certsync: certsync::publisher nodes: two nodes share a recipient')
  }

  $_signing_key = $signing_key ? {
    undef   => "${config_dir}/signing.key",
    default => $signing_key,
  }
  $config_file = "${config_dir}/publisher.yaml"

  $content = epp('certsync/publisher.yaml.epp', {
    'nats'         => certsync::nats_yaml($nats),
    'signing_key'  => $_signing_key,
    'lineages'     => $lineages,
    'nodes'        => $nodes,
    'certificates' => $certificates,
    'stream'       => $stream,
    'timeout'      => $timeout,
  })
  file { $config_file:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0600',
    content => certsync::config_content($nats, $content),
  }

  if $manage_signing_key {
    # Never replaces a key: every node trusts this one's public line.
    exec { 'certsync keygen signing':
      command   => [$binary_path, 'keygen', 'signing', '--out', $_signing_key],
      creates   => $_signing_key,
      umask     => '0077',
      logoutput => true,
      require   => [File[$binary_path], File[$config_dir]],
    }
  }

  file { "${hook_dir}/certsync":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0755',
    content => epp('certsync/certsync-deploy-hook.epp', {
      'binary_path' => $binary_path,
      'config_file' => $config_file,
      'hook_file'   => "${hook_dir}/certsync",
    }),
  }

  certsync::unit { 'certsync-republish.service':
    dropin => epp('certsync/republish.dropin.epp', {
      'binary_path' => $binary_path,
      'config_file' => $config_file,
    }),
  }
  certsync::unit { 'certsync-republish.timer': }

  if $manage_service {
    service { 'certsync-republish.timer':
      ensure    => running,
      enable    => true,
      subscribe => [
        File["${unit_dir}/certsync-republish.service"],
        File["${unit_dir}/certsync-republish.timer"],
        File["${unit_dir}/certsync-republish.service.d/puppet.conf"],
      ],
    }
  }
}
