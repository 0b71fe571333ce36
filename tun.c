/* tun.c */
#include "candy.h"
