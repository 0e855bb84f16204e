package localcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// deleteNftTable deletes the nf_tables table name of family proto (unix.NFPROTO_IPV4 or _IPV6)
// with everything in it, as `nft delete table ip NAME` does: one netlink batch holding a
// NFT_MSG_DELTABLE message. The nft command is not installed on these machines.
func deleteNftTable(proto uint8, name string) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("failed to open a netfilter netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	timeout := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &timeout); err != nil {
		return err
	}
	const deleteSeq = 2
	batch := NftDeleteTableBatch(proto, name, 1)
	if err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("failed to send the netlink batch: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("no answer from the kernel: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
				return syscall.Errno(-errno)
			}
			if m.Header.Seq == deleteSeq {
				return nil
			}
		}
		if n == 0 {
			return errors.New("empty answer from the kernel")
		}
	}
}

// NftDeleteTableBatch encodes the netlink batch that deletes a table: batch begin, NFT_MSG_DELTABLE
// (sequence firstSeq+1, acknowledged) and batch end.
func NftDeleteTableBatch(proto uint8, name string, firstSeq uint32) []byte {
	attr := netlinkAttr(unix.NFTA_TABLE_NAME, append([]byte(name), 0))
	var batch []byte
	batch = append(batch, nfnlMessage(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, firstSeq, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	batch = append(batch, nfnlMessage(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELTABLE, unix.NLM_F_REQUEST|unix.NLM_F_ACK, firstSeq+1, proto, 0, attr)...)
	batch = append(batch, nfnlMessage(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, firstSeq+2, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	return batch
}

// nfnlMessage is a netlink header, a nfgenmsg (family, version, resource ID in network byte order)
// and the attributes.
func nfnlMessage(msgType, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+4, unix.SizeofNlMsghdr+4+len(attrs))
	b = append(b, attrs...)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], msgType)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	b[16], b[17] = family, unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], resID)
	return b
}

// netlinkAttr is one attribute, padded to 4 bytes.
func netlinkAttr(attrType uint16, value []byte) []byte {
	length := unix.SizeofNlAttr + len(value)
	b := make([]byte, (length+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(length))
	binary.NativeEndian.PutUint16(b[2:4], attrType)
	copy(b[4:], value)
	return b
}
