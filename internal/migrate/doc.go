// Package migrate turns the configuration of the estate certsync replaces
// (an rsync-over-SSH script and a daily cron) into certsync's, and edits
// publisher.yaml when a node is enrolled.
//
// The old script's configuration is:
//
//   - on the management host, one list file per certificate (the file's name
//     is the certificate name) naming the servers to sync it to, one IP
//     address or hostname per line ([ParseServerList], [ReadLists]);
//   - on each node, a list file naming the certificates to take from
//     /certsync/live, one per line ([ParseCertList]).
//
// In both, blank lines and lines starting with '#' are ignored; any other
// line that is not one value is an error naming the file and the line. The
// management host's known_hosts (or `ssh-keyscan -t ed25519` output) gives
// each server's SSH host key ([ParseKnownHosts]), which becomes its age
// recipient, so no node needs a new key. [Seed] plans publisher.yaml from
// both and names every node by [NodeName]'s rule.
//
// [PublisherYAML] and [NodeYAML] render the two configuration files;
// [AddNode] adds a node to an existing publisher.yaml, keeping every other
// byte of it. [WriteNewFile] and [ReplaceFile] write them durably.
//
// Every input is bounded: files above a size limit and lines above a length
// limit are refused before they are parsed.
package migrate
