// UvRequest<Req, Payload>: the owner's side of one libuv request in flight.
//
// A request (a write, a shutdown, a connect, a file-system call, work on
// the thread pool) may complete after the object that started it is gone:
// libuv completes writes on a closed stream with UV_ECANCELED, and a
// thread-pool job cannot be called back at all. So the request and what it
// carries (the Payload: buffers, the chunks they point into, a descriptor)
// live in a box that owns itself while in flight and is freed after its
// completion, whatever happened to the owner. The owner holds a UvRequest:
// the completion reaches the owner's `done` only while that UvRequest is
// alive and has not detach()ed; otherwise it runs into nothing and the box
// (payload included) is destroyed.
//
// One request in flight per UvRequest. Not copyable, not movable (the box
// points back at it). Loop thread only, except that a thread-pool job may
// use the payload on its worker thread (payload_of()).
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "uv/worker_priority.h"

namespace chronomerge {

struct NoPayload {};

template <typename Req, typename Payload = NoPayload>
class UvRequest {
 public:
  // Runs on completion with the payload (the owner may keep it, e.g. to
  // reuse its buffers) and the status: 0 or a libuv error (for fs
  // requests, a negative result; a non-negative result is in `status`
  // too: bytes written). The request is no longer in flight then, so
  // `done` may start the next one.
  using Done = std::function<void(Payload& payload, ssize_t status)>;

  explicit UvRequest(Done done) : done_(std::move(done)) {}
  ~UvRequest() { detach(); }
  UvRequest(const UvRequest&) = delete;
  UvRequest& operator=(const UvRequest&) = delete;

  bool pending() const { return box_ != nullptr; }
  // The payload of the request in flight. REQUIRES: pending().
  Payload& payload() { return box_->payload; }

  // Starts a request carrying `payload`: `submit(Req* req, Callback cb)`
  // calls the uv_* function with them (and may read or adjust the payload
  // through payload()) and returns its result. On success the request is
  // in flight; on failure nothing is, the payload is handed back through
  // `payload` and the error returned. REQUIRES: !pending().
  template <typename Submit>
  int start(Payload&& payload, Submit&& submit) {
    auto box = std::make_unique<Box>(std::move(payload), this);
    box->req.data = box.get();
    box_ = box.get();
    const int rc = submit(&box->req, callback());
    if (rc < 0) {
      box_ = nullptr;
      payload = std::move(box->payload);
      return rc;
    }
    box.release();  // the box owns itself until on_done
    return rc;
  }
  // Submits the completing request again with the same payload (a short
  // write's rest). REQUIRES: called from `done`; returns the uv_* result
  // (on failure nothing is in flight).
  template <typename Submit>
  int restart(Submit&& submit) {
    Box* box = completing_;
    const int rc = submit(&box->req, callback());
    if (rc == 0) {
      box_ = box;
      box->restarted = true;
    }
    return rc;
  }

  // The owner gives up the request: its completion will run into nothing.
  void detach() {
    if (completing_ != nullptr) completing_->owner = nullptr;
    completing_ = nullptr;
    if (box_ != nullptr) box_->owner = nullptr;
    box_ = nullptr;
  }

  // For thread-pool jobs: the payload of the request a work callback got.
  static Payload& payload_of(Req* req) { return static_cast<Box*>(req->data)->payload; }

  // For thread-pool jobs (Req uv_work_t, Payload a pointer to the job):
  // start() with uv_queue_work on `loop`, the job's member function `Run`
  // called on a pool thread, lowered first (lower_worker_priority()): the
  // one way this program queues work on the pool.
  template <auto Run>
  int queue_work(uv_loop_t* loop, Payload&& payload) {
    static_assert(std::is_same_v<Req, uv_work_t>, "work on the thread pool");
    return start(std::move(payload), [&](uv_work_t* req, uv_after_work_cb done) {
      return uv_queue_work(
          loop, req,
          [](uv_work_t* r) {
            lower_worker_priority();
            std::invoke(Run, *payload_of(r));
          },
          done);
    });
  }

 private:
  struct Box {
    Box(Payload&& p, UvRequest* o) : payload(std::move(p)), owner(o) {}
    Req req{};
    Payload payload;
    UvRequest* owner;
    bool restarted = false;
  };

  static void complete(Req* req, ssize_t status) {
    auto* box = static_cast<Box*>(req->data);
    UvRequest* owner = box->owner;
    if (owner != nullptr) {
      owner->box_ = nullptr;
      owner->completing_ = box;
      box->restarted = false;
      owner->done_(box->payload, status);
      // `done` may have destroyed or detached the owner (box->owner is
      // then null) or submitted the request again (restart()).
      if (box->restarted) return;
      if (box->owner != nullptr) box->owner->completing_ = nullptr;
    }
    delete box;
  }

  static void on_done(Req* req, int status) { complete(req, status); }
  static void on_fs_done(uv_fs_t* req) {
    const ssize_t result = req->result;
    uv_fs_req_cleanup(req);
    complete(req, result);
  }
  // The completion callback libuv wants for this kind of request.
  static constexpr auto callback() {
    if constexpr (std::is_same_v<Req, uv_fs_t>) {
      return &UvRequest::on_fs_done;
    } else {
      return &UvRequest::on_done;
    }
  }

  Done done_;
  Box* box_ = nullptr;         // in flight
  Box* completing_ = nullptr;  // whose `done` is running
};

// Runs `job->run()` on libuv's thread pool and destroys the job on the
// loop thread once it ran, whatever became of whoever started it: for work
// that outlives its owner (closing a client library's handle, which may
// block). If the pool refuses the job, it runs here and now.
template <typename Job>
void run_on_pool(uv_loop_t* loop, std::unique_ptr<Job> job) {
  using Work = UvRequest<uv_work_t, std::unique_ptr<Job>>;
  Work work([](std::unique_ptr<Job>&, ssize_t) {});
  if (work.template queue_work<&Job::run>(loop, std::move(job)) < 0) job->run();
  // `work` detaches here: the request owns itself and frees the job after
  // its completion.
}

}  // namespace chronomerge
