# frozen_string_literal: true

require 'spec_helper'

describe 'certsync::server' do
  let(:pre_condition) { CERTSYNC_CLASS }

  context 'with the module defaults' do
    it { is_expected.to compile.with_all_deps }
    it do
      is_expected.to contain_file('/etc/certsync/nats-server.conf').with(
        source: 'puppet:///modules/certsync/nats-server.conf', owner: 'root', mode: '0600',
      )
    end
    it { is_expected.to contain_file('/etc/systemd/system/certsync-server.service').with_source('puppet:///modules/certsync/certsync-server.service') }
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-server.service.d/puppet.conf').with_content(<<~CONF)
        # Managed by Puppet (certsync::server): where this host keeps certsync and
        # nats-server.conf. The unit itself is deploy/systemd/certsync-server.service.
        [Service]
        ExecStart=
        ExecStart=/usr/local/bin/certsync server --config /etc/certsync/nats-server.conf
      CONF
    end
    it do
      is_expected.to contain_service('certsync-server').with(ensure: 'running', enable: true).that_subscribes_to(
        ['File[/usr/local/bin/certsync]', 'File[/etc/certsync/nats-server.conf]'],
      )
    end
  end

  context 'with its own nats-server.conf and no service' do
    let(:params) { { nats_config_source: 'puppet:///modules/profile/nats-server.conf', manage_service: false } }

    it { is_expected.to contain_file('/etc/certsync/nats-server.conf').with_source('puppet:///modules/profile/nats-server.conf') }
    it { is_expected.not_to contain_service('certsync-server') }
  end

  context 'with a relative nats_config_source' do
    let(:params) { { nats_config_source: 'nats-server.conf' } }

    it { is_expected.to compile.and_raise_error(%r{parameter 'nats_config_source' expects a Certsync::Source}) }
  end
end
