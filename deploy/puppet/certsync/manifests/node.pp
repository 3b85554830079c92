# @summary A node: the certsync binary, node.yaml, the node's identity, the
#   hardened unit and the `certsync-node` service.
#
# Writes `<config_dir>/node.yaml` (0600) from its parameters, one
# certsync::certificate per entry of `certificates`; creates the age identity
# with `certsync keygen node --out` only when it is missing (the recipient it
# prints shows in Puppet's report), or uses the SSH host key; installs
# `certsync-node.service` exactly as shipped in deploy/systemd, with a drop-in
# (`certsync-node.service.d/puppet.conf`) that names binary_path and
# node.yaml and opens each install_dir's parent outside
# `/etc/letsencrypt/live` to writes; runs the service unless
# `manage_service` is false. A change of node.yaml, the binary or the unit
# restarts the service.
#
# @param nats
#   node.yaml's `nats:` section: `url` and the node's credential (`nkey:` from
#   `certsync auth`, `creds:`, or `user`/`password`), `tls: {ca, cert, key}`.
# @param trusted_publishers
#   The public key lines `certsync keygen signing` printed; several allow
#   rotating the signing key.
# @param certificates
#   Certificate name -> its entry (install_dir, schedule, check, reload,
#   verify, owner, group, cert_mode, key_mode, keep, splay, expiry_deadline,
#   command_timeout, verify_timeout, combined), each checked by
#   certsync::certificate. An entry may be empty (`{}`).
# @param node_name
#   This node's name, as under `nodes:` in publisher.yaml. Defaults to the
#   host's short name (module data), which must fit the node-name pattern.
# @param identity
#   `age`: an age identity at identity_file (default `<config_dir>/node.key`),
#   created when missing and never replaced. `ssh_host_key`: the SSH host key
#   at identity_file (default `/etc/ssh/ssh_host_ed25519_key`), which sshd
#   owns; the publisher lists its `.pub` line as the recipient.
# @param identity_file
#   The identity's path; see identity.
# @param stage_dir
#   Where staged bundles wait for their install.
# @param defaults
#   node.yaml's `defaults:` (any setting but install_dir) for every certificate.
# @param metrics_listen
#   `HOST:PORT` of the Prometheus metrics of `node run`; off when undef.
# @param status_interval
#   How often `node run` refreshes its status records; certsync's default (5m)
#   when undef.
# @param manage_service
#   Run and enable `certsync-node`. false leaves the service alone (a node
#   that runs `certsync node sync` from cron, or a test root).
#
# @example Hiera
#   certsync::binary_source: 'puppet:///modules/profile/certsync'
#   certsync::node::nats:
#     url: 'tls://mgmt.example.net:4222'
#     nkey: '/etc/certsync/web1.nk'
#     tls: {ca: '/etc/certsync/ca.pem'}
#   certsync::node::trusted_publishers: ['certsync-ed25519:…']
#   certsync::node::defaults:
#     check: 'nginx -t'
#     reload: 'systemctl reload nginx'
#   certsync::node::certificates:
#     example.com: {}
#     example.org: {schedule: '0 3 * * *', verify: '127.0.0.1:443'}
class certsync::node (
  Certsync::Nats                                 $nats,
  Array[Certsync::Publickey, 1]                  $trusted_publishers,
  Hash[Certsync::Certname, Certsync::Entry, 1] $certificates,
  Certsync::Nodename                             $node_name,
  Enum['age', 'ssh_host_key']                    $identity,
  Certsync::Absolutepath                         $stage_dir,
  Certsync::Settings                             $defaults,
  Boolean                                        $manage_service,
  Optional[Certsync::Absolutepath]               $identity_file   = undef,
  Optional[Certsync::Hostport]                   $metrics_listen  = undef,
  Optional[Certsync::Duration]                   $status_interval = undef,
) {
  contain certsync
  $binary_path = $certsync::binary_path
  $config_dir = $certsync::config_dir
  $unit_dir = $certsync::unit_dir

  certsync::check_modes('defaults', $defaults)
  $certificates.each |$cert, $settings| {
    certsync::certificate { $cert:
      settings => $settings,
    }
  }

  $_identity_file = $identity_file ? {
    undef   => $identity ? {
      'age'   => "${config_dir}/node.key",
      default => '/etc/ssh/ssh_host_ed25519_key',
    },
    default => $identity_file,
  }

  $content = epp('certsync/node.yaml.epp', {
    'node_name'          => $node_name,
    'nats'               => certsync::nats_yaml($nats),
    'identity_file'      => $_identity_file,
    'trusted_publishers' => $trusted_publishers,
    'stage_dir'          => $stage_dir,
    'metrics_listen'     => $metrics_listen,
    'status_interval'    => $status_interval,
    'defaults'           => $defaults,
    'certificates'       => $certificates,
  })

  file { "${config_dir}/node.yaml":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0600',
    content => certsync::config_content($nats, $content),
  }

  if $identity == 'age' {
    # Never replaces a key: the recipient in publisher.yaml is this key's.
    exec { 'certsync keygen node':
      command   => [$binary_path, 'keygen', 'node', '--out', $_identity_file],
      creates   => $_identity_file,
      umask     => '0077',
      logoutput => true,
      require   => [File[$binary_path], File[$config_dir]],
    }
  }

  # Install parents certsync writes outside the unit's own
  # ReadWritePaths=/etc/letsencrypt/live (ProtectSystem=full makes /etc, /usr
  # and /boot read-only); "-" tolerates a parent that does not exist yet.
  $write_dirs = $certificates.map |$cert, $settings| {
    certsync::parent(certsync::install_dir($cert, $settings))
  }.unique.sort.filter |$dir| { $dir != '/etc/letsencrypt/live' }

  certsync::unit { 'certsync-node.service':
    dropin => epp('certsync/node.dropin.epp', {
      'binary_path' => $binary_path,
      'config_file' => "${config_dir}/node.yaml",
      'write_dirs'  => $write_dirs,
    }),
  }

  if $manage_service {
    service { 'certsync-node':
      ensure    => running,
      enable    => true,
      subscribe => [
        File[$binary_path],
        File["${config_dir}/node.yaml"],
        File["${unit_dir}/certsync-node.service"],
        File["${unit_dir}/certsync-node.service.d/puppet.conf"],
      ],
    }
    if $identity == 'age' {
      Exec['certsync keygen node'] -> Service['certsync-node']
    }
  }
}
