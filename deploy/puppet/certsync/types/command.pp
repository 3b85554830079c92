# @summary A check or reload command line of node.yaml: one line, no control
#   characters. certsync splits it into words itself and runs it without a shell.
type Certsync::Command = Pattern[/\A[^\x00-\x1f\x7f]+\z/]
