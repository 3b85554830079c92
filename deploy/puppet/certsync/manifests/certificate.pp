# @summary One certificate a node installs: its install_dir and install
#   settings, checked as certsync checks them.
#
# certsync::node declares one for each entry of its `certificates`
# parameter and renders every entry into node.yaml; the define itself
# manages no file. It exists so that each certificate is a resource of the
# catalog (reports name `Certsync::Certificate[example.com]`, and other
# resources can depend on it) and so that every error names the certificate.
#
# Why a hash and not one parameter per setting: `schedule` is a Puppet
# metaparameter, so a define cannot take it as a parameter, and the hash
# keeps node.yaml's own key names, so that Hiera data reads like node.yaml.
#
# Declaring it yourself is refused: node.yaml is written by certsync::node
# alone (no puppetlabs-concat), so add the certificate to
# `certsync::node::certificates` instead.
#
# The checks, before anything is written: each setting's type
# (Certsync::Entry); cert_mode never writable by group or others and
# key_mode never open to others; install_dir (default
# `/etc/letsencrypt/live/<title>`) neither overlapping stage_dir nor its own
# install store (`<parent>/.certsync`), nor another certificate's install_dir
# or install store.
#
# @param settings
#   The certificate's entry, with node.yaml's keys: install_dir, schedule,
#   check, reload, verify, owner, group, cert_mode, key_mode, keep, splay,
#   expiry_deadline, command_timeout, verify_timeout, combined. Keys left out
#   take node.yaml's `defaults`, then certsync's built-in defaults.
#
# @example Declared by certsync::node from Hiera
#   certsync::node::certificates:
#     example.com:
#       check: 'nginx -t'
#       reload: 'systemctl reload nginx'
#       schedule: '0 3 * * *'
define certsync::certificate (
  Certsync::Entry $settings = {},
) {
  assert_type(Certsync::Certname, $title) |$expected, $actual| {
    fail("certsync: certificate name ${String($title, '%p')} is not a certbot lineage name (letters, digits, '.', '_', '-')")
  }
  unless defined(Class['certsync::node']) and $title in $certsync::node::certificates {
    fail("certsync: certificate \"${title}\": add it to certsync::node's certificates; node.yaml is written by certsync::node alone")
  }
  $where = "certificate \"${title}\""
  certsync::check_modes($where, $settings)

  $stage_dir = $certsync::node::stage_dir
  $install_dir = certsync::install_dir($title, $settings)
  $store = certsync::install_store($install_dir)
  if certsync::nested($install_dir, $stage_dir) {
    fail("certsync: ${where}: install_dir ${install_dir} overlaps stage_dir ${stage_dir}")
  }
  if certsync::nested($store, $stage_dir) {
    $why = "overlaps the install store ${store} that install_dir ${install_dir} keeps its versions in"
    fail("certsync: ${where}: stage_dir ${stage_dir} ${why}")
  }
  if certsync::nested($install_dir, $store) {
    fail("certsync: ${where}: install_dir ${install_dir} overlaps its own install store ${store}")
  }
  $certsync::node::certificates.each |$other, $other_settings| {
    if $other != $title and $other =~ Certsync::Certname and $other_settings =~ Certsync::Entry {
      $other_dir = certsync::install_dir($other, $other_settings)
      if certsync::nested($install_dir, $other_dir) {
        fail("certsync: ${where}: install_dir ${install_dir} overlaps certificate \"${other}\"'s ${other_dir}")
      }
      $other_store = certsync::install_store($other_dir)
      if certsync::nested($install_dir, $other_store) {
        fail("certsync: ${where}: install_dir ${install_dir} overlaps certificate \"${other}\"'s install store ${other_store}")
      }
    }
  }
}
