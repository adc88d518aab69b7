/* Micro-benchmark behind tinylsm/_crc32.h: zlib crc32 vs slicing-by-8 on
 * record-sized inputs.  Build and run: gcc -O3 -o /tmp/crc bench/crc32_micro.c -lz && /tmp/crc */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
static uint32_t T[8][256];
static void init(void){for(uint32_t i=0;i<256;i++){uint32_t c=i;for(int k=0;k<8;k++)c=c&1?0xEDB88320u^(c>>1):c>>1;T[0][i]=c;}
 for(int i=0;i<256;i++)for(int t=1;t<8;t++)T[t][i]=(T[t-1][i]>>8)^T[0][T[t-1][i]&0xff];}
static inline uint32_t s8(uint32_t crc,const unsigned char*p,size_t n){crc=~crc;
 while(n>=8){uint32_t a,b;memcpy(&a,p,4);memcpy(&b,p+4,4);a^=crc;
  crc=T[7][a&0xff]^T[6][(a>>8)&0xff]^T[5][(a>>16)&0xff]^T[4][a>>24]^T[3][b&0xff]^T[2][(b>>8)&0xff]^T[1][(b>>16)&0xff]^T[0][b>>24];p+=8;n-=8;}
 while(n--)crc=T[0][(crc^*p++)&0xff]^(crc>>8);return ~crc;}
double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){init();static unsigned char buf[1<<20];for(int i=0;i<sizeof buf;i++)buf[i]=i*131+7;
 int sizes[]={17,65,261};for(int s=0;s<3;s++){int n=sizes[s];long iters=5000000;volatile uint32_t x=0;
 double t=now();for(long i=0;i<iters;i++)x+=crc32(0,buf+(i*64%900000),n);double tz=now()-t;
 t=now();for(long i=0;i<iters;i++)x+=s8(0,buf+(i*64%900000),n);double ts=now()-t;
 for(long i=0;i<1000;i++) if(crc32(0,buf+i,n)!=s8(0,buf+i,n)){printf("MISMATCH\n");return 1;}
 printf("len %d: zlib %.1f ns, slicing-by-8 %.1f ns\n",n,tz/iters*1e9,ts/iters*1e9);}}
