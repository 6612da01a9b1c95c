/*
 * The inbox: a lock-free multi-producer, single-consumer queue. Producers
 * push onto a Treiber stack; the loop takes the whole stack with one exchange
 * and reverses it, which restores post order (the order the pushes
 * succeeded in, so also each producer's own order). Taking everything at once
 * means no pop of single nodes, hence no ABA problem.
 *
 * Wake-ups: only the push that finds the stack empty writes the wake fd, so a
 * burst of posts costs one write. That is safe because the loop reads the
 * wake fd (in the I/O phase) before it takes the stack: a post after the take
 * finds the stack empty and wakes the loop again.
 */
#include "loop_internal.h"

void mqbi_loop_post(mqbi_loop *l, mqbi_inbox_item *it)
{
	mqbi_inbox_item *head = atomic_load_explicit(&l->inbox, memory_order_relaxed);
	do {
		it->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&l->inbox, &head, it, memory_order_release,
	                                                memory_order_relaxed));
	if (!head)
		mqbi_loop_wake(l);
}

/* Takes every queued item, oldest first. */
static mqbi_inbox_item *take_all(mqbi_loop *l)
{
	if (!atomic_load_explicit(&l->inbox, memory_order_relaxed))
		return NULL;
	mqbi_inbox_item *it = atomic_exchange_explicit(&l->inbox, NULL, memory_order_acquire);
	mqbi_inbox_item *fifo = NULL;
	while (it) {
		mqbi_inbox_item *next = it->next;
		it->next = fifo;
		fifo = it;
		it = next;
	}
	return fifo;
}

/* Items posted while these run (also by them) wait for the next iteration,
 * which their post has already woken. */
void mqbi_inbox_drain(mqbi_loop *l)
{
	mqbi_inbox_item *it = take_all(l);
	while (it) {
		mqbi_inbox_item *next = it->next; /* run owns it from here */
		it->next = NULL;
		it->run(l, it);
		it = next;
	}
}

void mqbi_inbox_drop_all(mqbi_loop *l)
{
	mqbi_inbox_item *it;
	while ((it = take_all(l)) != NULL) {
		while (it) {
			mqbi_inbox_item *next = it->next;
			it->next = NULL;
			if (it->drop)
				it->drop(it);
			it = next;
		}
	}
}
