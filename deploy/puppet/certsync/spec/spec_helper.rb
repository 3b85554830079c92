# frozen_string_literal: true

# rspec-puppet setup that needs only Debian's packages (ruby-rspec-puppet,
# puppet) and writes nothing into the checkout: the module path is a new
# temporary folder holding one symlink, certsync -> this module. Run from
# the module's folder:
#
#   rspec -I spec spec/classes spec/defines
#
# (cmd/certsync's TestPuppetSpecs runs exactly that.)
require 'fileutils'
require 'tmpdir'
require 'rspec-puppet'

module_root = File.expand_path('..', __dir__)
fixtures = Dir.mktmpdir('certsync-rspec-puppet')
FileUtils.mkdir_p(File.join(fixtures, 'modules'))
FileUtils.mkdir_p(File.join(fixtures, 'manifests'))
File.symlink(module_root, File.join(fixtures, 'modules', 'certsync'))
at_exit { FileUtils.remove_entry(fixtures) }

RSpec.configure do |c|
  # rspec-puppet would otherwise make spec/fixtures (and a link to the module
  # in it) inside the checkout before every group.
  c.setup_fixtures = false
  c.module_path = File.join(fixtures, 'modules')
  c.manifest_dir = File.join(fixtures, 'manifests')
  c.environmentpath = fixtures
  c.strict_variables = true
  c.default_facts = {
    networking: { hostname: 'web1', fqdn: 'web1.example.net' },
    os: { family: 'Debian', name: 'Debian', release: { major: '12' } },
  }
  # Puppet settings that would otherwise point at /etc/puppet and /var/lib/puppet.
  c.before(:each) do
    Puppet.settings[:vardir] = File.join(fixtures, 'var')
    Puppet.settings[:confdir] = File.join(fixtures, 'conf')
    Puppet.settings[:codedir] = File.join(fixtures, 'code')
  end
end

# Values the specs share.
PUBLISHER_KEY = 'certsync-ed25519:' + ('A' * 43) + '='
AGE_RECIPIENT = 'age1' + ('q' * 58)
SSH_RECIPIENT = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxlYXN0LXByaXZpbGVnZS1rZXktZm9yLXRlc3Rz web2'
# The certsync class as the specs of the other classes declare it first.
CERTSYNC_CLASS = "class { 'certsync': binary_source => 'puppet:///modules/profile/certsync' }"

# Helpers of the example groups.
module CertsyncSpecHelpers
  # Bad input: for each case, what => [parameters merged into base, error],
  # a context "with what" whose catalog fails to compile with error, a
  # clear message naming what and why.
  def it_refuses(cases)
    cases.each do |what, (override, error)|
      context "with #{what}" do
        let(:params) { base.merge(override) }

        it { is_expected.to compile.and_raise_error(error) }
      end
    end
  end
end

RSpec.configure { |c| c.extend CertsyncSpecHelpers }
