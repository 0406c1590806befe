// DeadLetter: malformed and late records, one JSON object per line, in a
// file: {"feed":"bus-a","reason":"not_json","line":"<the original line>"}.
//
// It has its own small Output, so a slow disk never holds back the merge;
// the file is appended to and reopened on SIGUSR1 like file outputs.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "output/output.h"
#include "sinks/file_writer.h"

namespace chronomerge {

class DeadLetter {
 public:
  // `finished` runs once everything was written after end() (or writing
  // failed).
  DeadLetter(uv_loop_t* loop, std::string path, std::function<void()> finished);
  ~DeadLetter();
  bool start();
  void write(std::string_view feed, std::string_view reason, std::string_view line);
  void flush() { output_.flush(); }
  void reopen() { writer_->reopen(); }
  void close() { writer_->close(); }
  // Nothing more will be written (the merge is over): finish the file.
  void end();
  bool finished() const { return finished_; }
  uint64_t records() const { return output_.records(); }

 private:
  Output output_;
  std::unique_ptr<FileWriter> writer_;
  std::string scratch_;
  bool finished_ = false;
};

}  // namespace chronomerge
