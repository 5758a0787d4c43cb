#!/bin/sh
# udhcpc event script for Loris container ports (runs inside the container's network
# namespace; the filesystem is the host's). Applies the lease to the interface and prints
# it as "lease A.B.C.D/LEN" for the agent. No default route: the pod network is private.
BB=${LORIS_BUSYBOX:-busybox}
case "$1" in
    deconfig)
        $BB ip -4 addr flush dev "$interface"
        $BB ip link set dev "$interface" up
        ;;
    bound|renew)
        $BB ip -4 addr flush dev "$interface"
        $BB ip addr add "$ip/${mask:-24}" dev "$interface"
        echo "lease $ip/${mask:-24}"
        ;;
    leasefail|nak)
        echo "dhcp $1 on $interface" >&2
        ;;
esac
exit 0
