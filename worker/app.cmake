# The rigtune-worker executable: one rank of one job. Included from
# worker/CMakeLists.txt when both the engine (LibTorch) and the service
# (gRPC) are built. main.cc sees the engine headers and the coordinator
# link's header, never generated protobuf code (see Note [Two protobufs]).
add_executable(rigtune-worker ${CMAKE_CURRENT_LIST_DIR}/main.cc)
target_link_libraries(rigtune-worker PRIVATE rigtune_engine rigtune_worker_coord)
rigtune_warnings(rigtune-worker)
