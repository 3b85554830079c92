# frozen_string_literal: true

require 'spec_helper'

# certsync::unit is private: certsync::node, certsync::publisher and
# certsync::server declare it (spec/classes check the units and drop-ins they
# render); these examples pin the define's own files, modes and owners.
describe 'certsync::unit' do
  let(:pre_condition) { CERTSYNC_CLASS }
  let(:title) { 'certsync-server.service' }

  context 'with a drop-in' do
    let(:params) { { dropin: "[Service]\nExecStart=\nExecStart=/opt/certsync server\n" } }

    it { is_expected.to compile.with_all_deps }
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-server.service').with(
        ensure: 'file', owner: 'root', group: 'root', mode: '0644',
        source: 'puppet:///modules/certsync/certsync-server.service',
      )
    end
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-server.service.d').with(
        ensure: 'directory', owner: 'root', group: 'root', mode: '0755',
      )
    end
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-server.service.d/puppet.conf').with(
        ensure: 'file', owner: 'root', group: 'root', mode: '0644',
        content: "[Service]\nExecStart=\nExecStart=/opt/certsync server\n",
      ).that_requires('File[/etc/systemd/system/certsync-server.service.d]')
    end
    # The unit, its .d, the drop-in; the certsync class adds the binary and config_dir.
    it { is_expected.to have_file_resource_count(5) }
  end

  context 'without a drop-in' do
    let(:title) { 'certsync-republish.timer' }

    it { is_expected.to contain_file('/etc/systemd/system/certsync-republish.timer').with_source('puppet:///modules/certsync/certsync-republish.timer') }
    it { is_expected.not_to contain_file('/etc/systemd/system/certsync-republish.timer.d') }
    it { is_expected.not_to contain_file('/etc/systemd/system/certsync-republish.timer.d/puppet.conf') }
  end

  context 'with the certsync class given another unit_dir' do
    let(:pre_condition) do
      "class { 'certsync': binary_source => 'puppet:///modules/profile/certsync', unit_dir => '/srv/root/etc/systemd/system' }"
    end
    let(:params) { { dropin: "[Service]\n" } }

    it { is_expected.to contain_file('/srv/root/etc/systemd/system/certsync-server.service') }
    it { is_expected.to contain_file('/srv/root/etc/systemd/system/certsync-server.service.d/puppet.conf').with_content("[Service]\n") }
  end

  context 'with an empty drop-in' do
    let(:params) { { dropin: '' } }

    it { is_expected.to compile.and_raise_error(%r{parameter 'dropin' expects}) }
  end
end
