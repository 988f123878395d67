# The rigtune-worker executable: one rank of one job. Included from
# worker/CMakeLists.txt when both the engine (LibTorch) and the service
# (gRPC) are built. main.cc sees the engine headers and the coordinator
# link's header, never generated protobuf code (see Note [Two protobufs]).
add_executable(rigtune-worker ${CMAKE_CURRENT_LIST_DIR}/main.cc)
target_link_libraries(rigtune-worker PRIVATE rigtune_engine rigtune_worker_coord)
rigtune_warnings(rigtune-worker)

# Installed beside rigtuned, which looks for rigtune-worker in its own folder.
# The installed binary keeps the path to LibTorch's libraries (TorchConfig
# sets TORCH_INSTALL_PREFIX); that path is part of the build RPATH, so
# cmake --install can shorten it in place.
include(GNUInstallDirs)
set_target_properties(rigtune-worker PROPERTIES INSTALL_RPATH "${TORCH_INSTALL_PREFIX}/lib")
install(TARGETS rigtune-worker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
