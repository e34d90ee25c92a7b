#!/bin/bash
# An rsh agent for Open MPI (--mca plm_rsh_agent) that starts a command on an
# emulated host: a network namespace.  Host address A.B.C.i names the i-th
# namespace of TRUSTMOE_NETNS (space-separated); the command runs there in a
# UTS namespace of its own whose hostname is h<i>, so each emulated host has
# its own address and name.  Used by tests/cli/mpi_netns.sh and
# bench/mpi_latency.sh.
#   netns_agent.sh [rsh options] HOST COMMAND...
host=$1
shift
while [ "${host#-}" != "$host" ]; do host=$1; shift; done # rsh options before the host
n=${host##*.}
read -r -a ns <<<"${TRUSTMOE_NETNS:?netns_agent.sh: TRUSTMOE_NETNS names no namespaces}"
exec ip netns exec "${ns[$((n - 1))]}" unshare --uts sh -c "hostname h$n; $*"
