
// vmi: the VMI handshake (vmi/pc/xv6patch; docs/pc.md, "xv6's hook sites").
// Find the VMI ROM as the 2006 guests did: an option ROM (0xAA55 at +0) with
// the signature "cVmi" at +8 and a zero byte sum over its length (+2, in
// 512-byte units), looked for in 2 KiB steps in physical 0xC0000-0xE0000;
// then call its Init entry (+0x80, call 4 * 32 bytes) through the kernel's
// mapping of that physical address, at CPL 0 with paging on. Init returns
// 0 when a hypervisor took this CPU (it patched the hook sites the first
// time and deprivileged this CPU). Natively there is no ROM: nothing is
// called, the sites stay the plain instructions and xv6 runs as stock.
// Every CPU calls it before its first hook site runs, while entrypgdir's
// identity map still reaches the GDT the CPU is running on.
#define VMI_ROM_SCAN_START 0xC0000
#define VMI_ROM_SCAN_END   0xE0000
#define VMI_ROM_SCAN_STEP  2048
#define VMI_ROM_SIGNATURE  0x696D5663   // "cVmi"
#define VMI_ROM_INIT       0x80

int vmicpus;   // how many CPUs a VMI hypervisor took

static int
vmiinit(void)
{
  uint pa, i, n;
  uchar *rom, sum;
  int r;

  for(pa = VMI_ROM_SCAN_START; pa < VMI_ROM_SCAN_END; pa += VMI_ROM_SCAN_STEP){
    rom = (uchar*)P2V(pa);
    if(*(volatile ushort*)rom != 0xAA55 || *(volatile uint*)(rom+8) != VMI_ROM_SIGNATURE)
      continue;
    n = rom[2] * 512;
    if(n == 0 || pa + n > VMI_ROM_SCAN_END)
      continue;
    sum = 0;
    for(i = 0; i < n; i++)
      sum += ((volatile uchar*)rom)[i];
    if(sum != 0)
      continue;
    // Init may clobber what a C call may: %eax (its result), %ecx, %edx.
    asm volatile("call *%1" : "=a" (r) : "r" (rom + VMI_ROM_INIT)
                 : "ecx", "edx", "memory", "cc");
    if(r == 0)
      asm volatile("lock; incl %0" : "+m" (vmicpus));
    return r;
  }
  return -1;   // no ROM: native
}
