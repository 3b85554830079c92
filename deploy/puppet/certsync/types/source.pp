# @summary Where a file resource takes the certsync binary from: a
#   `puppet:///` URL or an absolute path on the node.
type Certsync::Source = Variant[Pattern[/\Apuppet:\/\/[^\s]*\/[^\s]+\z/], Certsync::Absolutepath]
