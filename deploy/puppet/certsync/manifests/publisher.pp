# @summary The management host's publishing side: publisher.yaml, the signing
#   key, certbot's deploy hook, the republish timer and, when asked, the
#   rollout controller.
#
# Writes `<config_dir>/publisher.yaml` (0600) from its parameters; creates the
# signing key with `certsync keygen signing --out` only when it is missing,
# so an existing key is always kept (the public line it prints, for the
# nodes' trusted_publishers, shows in Puppet's report); installs certbot's
# deploy hook as `<hook_dir>/certsync`, which runs `certsync publish` after
# every renewal; installs `certsync-republish.service` and `.timer` exactly
# as shipped in deploy/systemd, with a drop-in
# (`certsync-republish.service.d/puppet.conf`) naming binary_path and
# publisher.yaml, and runs the timer unless `manage_service` is false. With
# `manage_rollout`, it installs `certsync-rollout.service` (the rollout
# controller, `certsync rollout run`) in the same way, with its drop-in
# `certsync-rollout.service.d/puppet.conf`, and runs it unless
# `manage_service` is false.
#
# Checked before anything is written: every node a certificate lists is under
# `nodes`, once; no two nodes share a recipient; each rollout policy is one
# certsync accepts (certsync::check_rollout): the default policy's canaries
# are under `nodes`, a certificate's own policy's canaries are among that
# certificate's nodes, and a certificate that takes the default policy gets
# at least one of its canaries.
#
# @param nats
#   publisher.yaml's `nats:` section: `url` and the publisher's credential
#   (`nkey:` from `certsync auth`, `creds:`, or `user`/`password`), `tls:`.
# @param nodes
#   Node name -> recipient: the `age1…` line `certsync keygen node` printed
#   (Puppet's report of certsync::node shows it), or the node's
#   `ssh-ed25519 …` host key.
# @param certificates
#   Certificate (certbot lineage) name -> the names of the nodes that get it,
#   or a hash `{nodes => [...], rollout => {...}}` giving the certificate its
#   own rollout policy (replacing `rollout` whole; `rollout => 'none'` turns
#   it off for this certificate). See Certsync::Publication.
# @param manage_signing_key
#   Create the signing key when missing. false: the key is put there by other
#   means (it is never replaced either way).
# @param hook_dir
#   certbot's deploy hook folder; certbot creates it. The hook is
#   `<hook_dir>/certsync`, mode 0755.
# @param manage_service
#   Run and enable `certsync-republish.timer`, and `certsync-rollout` when
#   `manage_rollout` is true. false leaves them alone.
# @param manage_rollout
#   Install the rollout controller's unit, `certsync-rollout.service`, with
#   its drop-in (and run it, with `manage_service`). false leaves it alone.
#   A certificate with a rollout policy needs the controller running
#   somewhere with this signing key: without it a renewal stays staged on
#   every node (installed there only under its expiry deadline).
# @param signing_key
#   The signing key's path; `<config_dir>/signing.key` when undef.
# @param lineages
#   Where republish finds each certificate's lineage; certsync's default
#   (`/etc/letsencrypt/live`) when undef.
# @param rollout
#   publisher.yaml's `rollout:`, the staged rollout policy of every
#   certificate without its own (Certsync::Rollout); none when undef: a
#   renewal goes into service on every node at once.
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
#     web3: 'age1…'
#   certsync::publisher::certificates:
#     example.com: [web1, web2, web3]
#     legacy.example.com:
#       nodes: [web3]
#       rollout: 'none'
#   certsync::publisher::rollout:
#     canary: [web1]
#     waves: ['50%', '100%']
#     soak: '30m'
#   certsync::publisher::manage_rollout: true
class certsync::publisher (
  Certsync::Nats                                                   $nats,
  Hash[Certsync::Nodename, Certsync::Recipient, 1]                 $nodes,
  Hash[Certsync::Certname, Certsync::Publication, 1]               $certificates,
  Boolean                                                          $manage_signing_key,
  Certsync::Absolutepath                                           $hook_dir,
  Boolean                                                          $manage_service,
  Boolean                                                          $manage_rollout,
  Optional[Certsync::Absolutepath]                                 $signing_key = undef,
  Optional[Certsync::Absolutepath]                                 $lineages    = undef,
  Optional[Certsync::Rollout]                                      $rollout     = undef,
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

  if $rollout =~ NotUndef {
    certsync::check_rollout('certsync::publisher rollout', $rollout, $nodes.keys, "certsync::publisher's nodes")
  }
  $certificates.each |$cert, $entry| {
    $members = $entry ? {
      Array   => $entry,
      default => $entry['nodes'],
    }
    $members.each |$member| {
      unless $member in $nodes {
        fail("certsync: certificate \"${cert}\": node \"${member}\" is not listed in certsync::publisher's nodes")
      }
    }
    if length($members.unique) != length($members) {
      fail("certsync: certificate \"${cert}\": a node is listed twice")
    }
    if $entry =~ Hash and 'rollout' in $entry {
      # Its own policy: its canaries are its own nodes (certsync only
      # needs one of them to be, but a canary that does not get the
      # certificate is a mistake).
      if $entry['rollout'] =~ Hash {
        certsync::check_rollout("certificate \"${cert}\": rollout", $entry['rollout'], $members, 'its nodes')
      }
    } elsif $rollout =~ NotUndef and $rollout['canary'] =~ Array {
      # The default policy's listed canaries: certsync needs one of them
      # to get each certificate that takes it.
      $canaries = $rollout['canary'].join(', ')
      unless $rollout['canary'].any |$node| { $node in $members } {
        $hint = 'list one under its nodes, or give it its own rollout'
        fail("certsync: certificate \"${cert}\": none of the rollout's canaries (${canaries}) gets it: ${hint}")
      }
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
    'rollout'      => $rollout,
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

  if $manage_rollout {
    certsync::unit { 'certsync-rollout.service':
      dropin => epp('certsync/rollout.dropin.epp', {
        'binary_path' => $binary_path,
        'config_file' => $config_file,
      }),
    }
  }

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
    if $manage_rollout {
      # A long-running process that may keep what it read at start: a new
      # publisher.yaml, binary or unit restarts it.
      service { 'certsync-rollout':
        ensure    => running,
        enable    => true,
        subscribe => [
          File[$binary_path],
          File[$config_file],
          File["${unit_dir}/certsync-rollout.service"],
          File["${unit_dir}/certsync-rollout.service.d/puppet.conf"],
        ],
      }
      if $manage_signing_key {
        Exec['certsync keygen signing'] -> Service['certsync-rollout']
      }
    }
  }
}
