# Accuracy-versus-time curves of doc/fmnist.md (k-NN k = 20, teacher CLS, 10k test images).
#   gnuplot doc/fmnist-curves.gp        (from the repository root; writes doc/fmnist-curves.png)
# Data: doc/fmnist-curves.dat, one block per curve (blank-line separated):
#   step  minutes  knn_k10  knn_k20
set terminal pngcairo size 1100,440 font ",11"
set output "doc/fmnist-curves.png"
set multiplot layout 1,2 title "Fashion-MNIST, k-NN (k = 20) of the teacher CLS, official protocol"
set grid
set key bottom right
set yrange [50:90]
set ylabel "k-NN top-1 (%)"
set xlabel "training step"
plot "doc/fmnist-curves.dat" index 0 using 1:4 with linespoints lw 2 pt 7 title "official PyTorch, parity recipe", \
     ""                      index 1 using 1:4 with linespoints lw 2 pt 5 title "dinov2c, parity recipe", \
     ""                      index 2 using 1:4 with linespoints lw 2 pt 9 title "dinov2c, best recipe (fmnist-vit-tiny)", \
     ""                      index 3 using 1:4 with points pt 6 ps 2 title "dinov2c, parity model, compressed schedule", \
     84.6 with lines dt 2 lc rgb "gray" title "raw pixels (84.6%)"
set xlabel "training minutes on the 2-core machine"
plot "doc/fmnist-curves.dat" index 0 using 2:4 with linespoints lw 2 pt 7 title "official PyTorch, parity recipe", \
     ""                      index 1 using 2:4 with linespoints lw 2 pt 5 title "dinov2c, parity recipe", \
     ""                      index 2 using 2:4 with linespoints lw 2 pt 9 title "dinov2c, best recipe (fmnist-vit-tiny)", \
     ""                      index 3 using 2:4 with points pt 6 ps 2 title "dinov2c, parity model, compressed schedule", \
     84.6 with lines dt 2 lc rgb "gray" title "raw pixels (84.6%)"
unset multiplot
